// Context: immutable and persistent, inherited by children, readable from any task of a scope.
import assert from "node:assert/strict";
import {
  Context,
  type ContextKey,
  CoroutineExceptionHandler,
  coroutineScope,
  createContextKey,
  createScope,
  Deadline,
  supervisorScope,
} from "../mod.ts";
import { assertSameItems, prng } from "./support.ts";
import { childContext, contextCopyWork, keyHashesFrom } from "../src/context.ts";

const user = createContextKey<string>("user");
const depth = createContextKey<number>("depth");

Deno.test("Context is immutable: with/without return new contexts, the old one unchanged", () => {
  const a = Context.empty.with(user, "ada");
  const b = a.with(depth, 1);
  const c = b.without(user);
  assert.equal(Context.empty.size, 0);
  assert.deepEqual([a.get(user), a.get(depth), a.size], ["ada", undefined, 1]);
  assert.deepEqual([b.get(user), b.get(depth), b.size], ["ada", 1, 2]);
  assert.deepEqual([c.get(user), c.get(depth), c.size], [undefined, 1, 1]);
  assert.ok(Object.isFrozen(a));
  assert.throws(() => {
    (a as unknown as { x: number }).x = 1;
  }, TypeError);
});

Deno.test("user code cannot build a Context through a static of the class: no static makes one from arguments it does not check (Context._timed made one with any Deadline and timeout)", () => {
  // `Context._timed(context, deadline, timeout)`, public to JavaScript (its @ignore hid it from
  // the docs only), set any value as the Deadline, past `with`'s check ("must be a number"),
  // with a timeout record of the caller's own that decided whether the Deadline was in force.
  assert.equal(Object.hasOwn(Context, "_timed"), false);
  assert.equal((Context as unknown as Record<string, unknown>)._timed, undefined);
  const odd = "not a number";
  const timeout = { done: false };
  for (const name of Object.getOwnPropertyNames(Context)) {
    const f = (Context as unknown as Record<string, unknown>)[name];
    if (typeof f !== "function" || name === "prototype") continue;
    let made: unknown = undefined;
    try {
      made = (f as (...a: unknown[]) => unknown).call(Context, Context.empty, odd, timeout);
    } catch {
      continue; // refused: nothing made
    }
    if (!(made instanceof Context)) continue;
    assert.notEqual(made.get(Deadline), odd, `Context.${name} set an unchecked Deadline`);
  }
  // The checked way still refuses it, named.
  assert.throws(() => Context.empty.with(Deadline, odd as never), {
    name: "TypeError",
    message: /^Cannot set context value: deadline must be a number/,
  });
});

Deno.test("Context has no internal statics: given anything but a Context none throws the engine's 'Cannot read private member' (Context._is, _liveDeadline, _handSetDeadline and _child are module functions mod.ts does not export)", () => {
  // Public to JavaScript (an @ignore hid them from the docs only): `Context._liveDeadline({})`
  // threw "Cannot read private member #timeout from an object whose class did not declare it".
  const gone = ["_is", "_liveDeadline", "_handSetDeadline", "_runningTimeout", "_child"];
  for (const name of gone) {
    assert.equal(Object.hasOwn(Context, name), false, `Context.${name}`);
    assert.equal((Context as unknown as Record<string, unknown>)[name], undefined, name);
  }
  const fakes: unknown[] = [undefined, null, 1, "ctx", {}, Object.create(Context.prototype)];
  for (const name of Object.getOwnPropertyNames(Context)) {
    const f = (Context as unknown as Record<string, unknown>)[name];
    if (typeof f !== "function" || name === "prototype") continue;
    for (const fake of fakes) {
      for (const args of [[fake], [fake, fake], [Context.empty, fake], [fake, Context.empty]]) {
        try {
          (f as (...a: unknown[]) => unknown).apply(Context, args);
        } catch (e) {
          // Refused, named as the house form says, never with the engine's brand error.
          assert.doesNotMatch(String(e), /private member/, `Context.${name}`);
          assert.match((e as Error).message, /^Cannot /, `Context.${name}: ${String(e)}`);
        }
      }
    }
  }
});

Deno.test("Context's methods called on anything but a Context (Context.prototype.get.call({}, key), an object made from its prototype) throw a named TypeError, never the engine's 'Cannot read private member'", () => {
  // Each read `this.#entries`: given another receiver they threw "Cannot read private member
  // #entries (or #timeout) from an object whose class did not declare it"; so did printing an
  // object made from the prototype (`String(x)`; `Deno.inspect(x)`, which now prints, below).
  const calls: [string, string, (self: unknown) => unknown][] = [
    ["with", "set context value", (self) => Context.prototype.with.call(self, user, "ada")],
    ["get", "get context value", (self) => Context.prototype.get.call(self, user)],
    ["has", "look up context key", (self) => Context.prototype.has.call(self, user)],
    ["without", "remove context value", (self) => Context.prototype.without.call(self, user)],
    ["size", "read context size", (self) => Reflect.get(Context.prototype, "size", self)],
    ["keys", "list context keys", (self) => Context.prototype.keys.call(self)],
    ["toString", "print context", (self) => Context.prototype.toString.call(self)],
  ];
  const fakes: unknown[] = [
    {},
    Object.create(Context.prototype),
    new Proxy(Context.empty, {}),
    1,
    "ctx",
    null,
    undefined,
  ];
  for (const [name, op, call] of calls) {
    for (const fake of fakes) {
      assert.throws(() => call(fake), (e: unknown) => {
        assert.ok(e instanceof TypeError, `${name}: ${String(e)}`);
        assert.match(
          e.message,
          new RegExp(`^Cannot ${op}: this must be a Context, received `),
          `${name}: ${e.message}`,
        );
        return true;
      });
    }
    // A Context's own call is unchanged.
    call(Context.empty.with(user, "ada"));
  }
  // Printing an object made from the prototype names what it is not.
  assert.throws(() => String(Object.create(Context.prototype)), /^TypeError: Cannot print context/);
  // The key is checked after the receiver, as before on a Context.
  assert.throws(() => Context.empty.get({} as never), /^TypeError: Cannot get context value: key/);
});

Deno.test("inspecting anything but a Context through Context's inspect hook never throws: it prints Context <not a Context>", () => {
  // Deno.inspect(Object.create(Context.prototype)) threw "Cannot inspect context: this must be a
  // Context" out of console.log.
  assert.equal(Deno.inspect(Object.create(Context.prototype)), "Context <not a Context>");
  assert.equal(Deno.inspect([Object.create(Context.prototype)]), "[ Context <not a Context> ]");
  const hook = (Context.prototype as unknown as Record<symbol, (...a: unknown[]) => unknown>)[
    Symbol.for("Deno.customInspect")
  ];
  const fakes = [{}, Object.create(Context.prototype), new Proxy(Context.empty, {}), 1, "c", null];
  for (const [i, fake] of [...fakes, undefined].entries()) {
    assert.equal(hook.call(fake, Deno.inspect, {}), "Context <not a Context>", `fake ${i}`);
  }
  // A Context prints as before.
  assert.equal(Deno.inspect(Context.empty.with(user, "ada")), 'Context { [[keys]]: [ "user" ] }');
});

Deno.test("only a key createContextKey made is a key (a private brand check): an object made from a key's prototype, a Proxy of a key, or one whose getPrototypeOf trap throws get the named TypeError", () => {
  // `instanceof Key` passed Object.create(Key.prototype) (a key with no name, stored as any),
  // and let out the error of a Proxy's throwing getPrototypeOf trap.
  const trapped = new Error("getPrototypeOf trap");
  const keyProto = Object.getPrototypeOf(user) as object;
  const fakes: [string, unknown][] = [
    ["an object made from a key's prototype", Object.create(keyProto)],
    ["a Proxy of a key", new Proxy(user, {})],
    [
      "a Proxy whose getPrototypeOf trap throws",
      new Proxy({}, {
        getPrototypeOf() {
          throw trapped;
        },
      }),
    ],
  ];
  const ada = Context.empty.with(user, "ada");
  const ops: [string, (key: never) => unknown][] = [
    ["set context value", (key) => ada.with(key, "x")],
    ["get context value", (key) => ada.get(key)],
    ["look up context key", (key) => ada.has(key)],
    ["remove context value", (key) => ada.without(key)],
  ];
  for (const [what, fake] of fakes) {
    for (const [op, call] of ops) {
      assert.throws(() => call(fake as never), (e: unknown) => {
        assert.ok(e instanceof TypeError, `${what}, ${op}: ${String(e)}`);
        assert.equal(
          e.message,
          `Cannot ${op}: key must come from createContextKey, received [object Object]`,
          what,
        );
        return true;
      });
    }
  }
  // A real key is unchanged.
  assert.equal(ada.get(user), "ada");
  assert.equal(ada.with(depth, 1).has(depth), true);
  assert.equal(ada.without(user).size, 0);
});

Deno.test("Context is persistent: every version stays readable after later changes", () => {
  const versions = [Context.empty];
  for (let i = 0; i < 100; i++) versions.push(versions[i].with(depth, i));
  versions.forEach((v, i) => assert.equal(v.get(depth), i === 0 ? undefined : i - 1));
});

/** That `ctx` holds exactly `model`'s entries, its keys in the model's (a Map's) order. */
function assertHolds(
  ctx: Context,
  model: Map<ContextKey<number>, number>,
  pool: ContextKey<number>[],
  label: string,
) {
  assert.equal(ctx.size, model.size, label);
  assert.deepEqual(ctx.keys(), [...model.keys()], label);
  for (const k of pool) {
    assert.equal(ctx.has(k), model.has(k), `${label}: has ${k.name}`);
    assert.equal(ctx.get(k), model.get(k), `${label}: get ${k.name}`);
  }
}

Deno.test("every version of a context stays as it was through thousands of with/without of up to 300 keys, small and large (a Map of up to 16 entries, then a trie), its keys in the order first set", () => {
  // A model Map, copied per version, against each context: with and without of random keys,
  // across the change from a Map to a trie (past 16 entries) and back down past it.
  const pool = Array.from({ length: 300 }, (_, i) => createContextKey<number>(`p${i}`));
  const random = prng(42);
  let ctx = Context.empty;
  let model = new Map<ContextKey<number>, number>();
  const kept: [Context, Map<ContextKey<number>, number>][] = [];
  for (let step = 0; step < 6_000; step++) {
    // Grow for the first half (to near all 300 keys), then shrink.
    const k = pool[Math.floor(random() * (step < 3_000 ? pool.length : 40 + step % 260))];
    const remove = random() < (step < 3_000 ? 0.2 : 0.7);
    const next = remove ? ctx.without(k) : ctx.with(k, step);
    model = new Map(model);
    if (remove) model.delete(k);
    else model.set(k, step);
    ctx = next;
    if (step % 97 === 0) kept.push([ctx, model]);
  }
  assertHolds(ctx, model, pool, "last");
  kept.forEach(([c, m], i) => assertHolds(c, m, pool, `version ${i}`));
  assert.ok(kept.some(([c]) => c.size > 200) && kept.some(([c]) => c.size < 16));
});

Deno.test("a with or without on a context of 20,000 keys copies one path, not every entry (counted, not timed)", () => {
  // Each with copied a Map of every entry: building 8,000 keys took 1.6 s (quadratic: 20,000
  // took tens of seconds); a trie copies one path of 32-slot nodes (O(log n)). The work each
  // call does is counted (entries and slots copied, contextCopyWork), so that a copy of every
  // entry fails at the first context past 64 keys instead of making the test slow.
  const keys = Array.from({ length: 20_000 }, (_, i) => createContextKey<number>(`b${i}`));
  // A path is at most 7 nodes of 32 slots (32-bit hashes, 5 bits a level).
  const bound = 7 * 32;
  const worst = { with: 0, without: 0 };
  let ctx = Context.empty;
  for (const [i, k] of keys.entries()) {
    const before = contextCopyWork();
    ctx = ctx.with(k, i);
    if (i >= 64) worst.with = Math.max(worst.with, contextCopyWork() - before);
    if (worst.with > bound) break;
  }
  const grown = ctx;
  for (const k of keys.slice(0, 10_000)) {
    const before = contextCopyWork();
    ctx = ctx.without(k);
    worst.without = Math.max(worst.without, contextCopyWork() - before);
    if (worst.without > bound) break;
  }
  assert.ok(worst.with <= bound && worst.without <= bound, JSON.stringify(worst));
  assert.ok(worst.with > 0, "the count counts"); // a with copies at least one node
  assert.equal(grown.size, 20_000);
  assert.equal(ctx.size, 10_000);
  assert.equal(grown.get(keys[123]), 123);
  assert.equal(ctx.has(keys[123]), false);
  assert.equal(ctx.get(keys[19_999]), 19_999);
});

Deno.test("keys whose hashes are equal (past 2**32 keys made, the count wraps) are told apart in a large context", () => {
  // Two runs of keys hashed alike, the count wrapping past 2**32 to the hashes of the first keys
  // made (Deadline's among them): a trie holds each pair in one node, told apart by key.
  let early: ContextKey<number>[], twins: ContextKey<number>[];
  try {
    keyHashesFrom(2 ** 32 - 8);
    early = Array.from({ length: 24 }, (_, i) => createContextKey<number>(`e${i}`));
    keyHashesFrom(2 ** 32 - 8);
    twins = Array.from({ length: 40 }, (_, i) => createContextKey<number>(`t${i}`));
  } finally {
    keyHashesFrom(2 ** 20); // past every key made so far in this file
  }
  const pool = [...early, ...twins, Deadline as ContextKey<number>];
  let ctx = Context.empty;
  const model = new Map<ContextKey<number>, number>();
  const order = [...twins.slice(0, 20), ...early, Deadline, ...twins.slice(20)];
  for (const [i, k] of order.entries()) {
    ctx = ctx.with(k, i);
    model.set(k, i);
  }
  assertHolds(ctx, model, pool, "all set");
  const replaced = ctx.with(twins[3], -1);
  assert.equal(replaced.get(twins[3]), -1);
  assertHolds(ctx, model, pool, "unchanged");
  let less = ctx;
  for (const k of [twins[0], twins[1], twins[5], ...early.slice(0, 6)]) {
    less = less.without(k);
    model.delete(k);
  }
  assertHolds(less, model, pool, "some removed");
});

Deno.test("a context matches a model Map through with, without and child merges of keys whose hashes are equal or agree in their low bits (deep trie paths), across 16 entries both ways", () => {
  // The keys of the test above have hashes in sequence (a trie 2 levels deep, few equal): these
  // are made with hashes that are equal (one node holds them), that agree in their low 25 bits
  // (a path 6 levels deep) or are random, Deadline among them, and a run of with/without grows
  // and shrinks a context across 16 entries (a Map, then a trie) again and again. Each version is
  // checked against a model Map (size, keys() in first-set order, has, get), and so is a child
  // merge (`childContext`) of two versions either way, or of one and a context of a few keys, or
  // of two such (Maps, copied once), its Deadline the earlier of theirs. Before this test, a set
  // of an existing key that dropped the other entries of its hash (or kept a stale copy of itself
  // among them), a without that dropped them, and a merge of two small contexts that let the
  // parent's entries or a later Deadline win, all passed this file.
  const deadline = Deadline as ContextKey<number>;
  for (let seed = 1; seed <= 12; seed++) {
    const random = prng(seed);
    const hashes: number[] = [];
    const pool: ContextKey<number>[] = [];
    try {
      for (let i = 0; i < 48; i++) {
        const kind = random();
        const hash = kind < 0.3 && hashes.length > 0
          ? hashes[Math.floor(random() * hashes.length)] // equal to an earlier key's
          : kind < 0.7
          ? ((Math.floor(random() * 128) << 25) | 7) >>> 0 // the same low 25 bits
          : Math.floor(random() * 2 ** 32);
        hashes.push(hash);
        keyHashesFrom(hash - 1); // the next key made gets `hash`
        pool.push(createContextKey<number>(`h${i}`));
      }
    } finally {
      keyHashesFrom(2 ** 21); // past every key made so far in this file
    }
    pool.push(deadline);
    /** A context of up to 7 of the keys, and its model. */
    const some = (): [Context, Map<ContextKey<number>, number>] => {
      let c = Context.empty;
      const m = new Map<ContextKey<number>, number>();
      for (let i = Math.floor(random() * 8); i > 0; i--) {
        const key = pool[Math.floor(random() * pool.length)], v = Math.floor(random() * 3_000);
        c = c.with(key, v);
        m.set(key, v);
      }
      return [c, m];
    };
    let ctx = Context.empty;
    let model = new Map<ContextKey<number>, number>();
    const kept: [Context, Map<ContextKey<number>, number>][] = [];
    for (let step = 0; step < 1_500; step++) {
      const k = pool[Math.floor(random() * pool.length)];
      // Runs of 150 steps that grow (a fifth of them without) and that shrink (three quarters).
      const remove = random() < (Math.floor(step / 150) % 2 === 0 ? 0.2 : 0.75);
      ctx = remove ? ctx.without(k) : ctx.with(k, step);
      model = new Map(model);
      if (remove) model.delete(k);
      else model.set(k, step);
      assertHolds(ctx, model, pool, `seed ${seed}, step ${step}`);
      if (step % 23 === 0) kept.push([ctx, model]);
      if (step % 7 === 0 && kept.length > 1) {
        // With a kept version, and contexts of a few keys (two small ones merge as Maps).
        const [other, its] = kept[Math.floor(random() * kept.length)];
        const [few, fewModel] = some(), [more, moreModel] = some();
        for (
          const [parent, own, p, o] of [
            [other, ctx, its, model],
            [ctx, other, model, its],
            [few, ctx, fewModel, model],
            [ctx, few, model, fewModel],
            [few, more, fewModel, moreModel],
          ] as const
        ) {
          const merged = new Map(p);
          for (const [key, v] of o) merged.set(key, v);
          const pd = p.get(deadline), od = o.get(deadline);
          if (pd !== undefined && !(od !== undefined && od < pd)) merged.set(deadline, pd);
          kept.push([childContext(parent, own), merged]);
        }
      }
    }
    kept.forEach(([c, m], i) => assertHolds(c, m, pool, `seed ${seed}, version ${i}`));
  }
});

Deno.test("with an equal value and without an absent key return the same context", () => {
  const a = Context.empty.with(user, "ada");
  assert.equal(a.with(user, "ada"), a);
  assert.equal(a.without(depth), a);
  assert.equal(a.without(user), Context.empty);
});

Deno.test("keys compare by identity, not name; an entry may hold undefined", () => {
  const other = createContextKey<string>("user");
  const maybe = createContextKey<string | undefined>("maybe");
  const ctx = Context.empty.with(user, "ada").with(maybe, undefined);
  assert.equal(ctx.get(other), undefined);
  assert.equal(ctx.has(other), false);
  assert.equal(ctx.has(maybe), true);
  assertSameItems(ctx.keys(), [user, maybe]); // by identity: `other` is named "user" too
  assert.equal(String(ctx), 'Context(user="ada", maybe=undefined)');
});

Deno.test("a context prints a string over 4096 characters by its head and length, as error messages do", () => {
  // `toString` describes each value as error messages do (`describe`): a string of 4096
  // characters whole, a longer one by its first 64 and its length (whole, a huge one made
  // `String(ctx)` throw V8's RangeError "Invalid string length").
  const whole = "a".repeat(4096);
  assert.equal(String(Context.empty.with(user, whole)), `Context(user="${whole}")`);
  assert.equal(
    String(Context.empty.with(user, "a".repeat(4097))),
    `Context(user="${"a".repeat(64)}"… (a string of 4097 characters))`,
  );
});

Deno.test("a key's name over 4096 characters prints by its head and length, in String(key), String(ctx) and inspection with and without Deno's inspect", () => {
  // Printed whole before: String(key) and String(ctx) were strings of 2**28 characters, two such
  // keys in a context past the engine's limit (V8's RangeError "Invalid string length"), and a
  // hook called without Deno's inspect printed the whole name too.
  const n = 2 ** 28;
  const big = "x".repeat(n);
  const a = createContextKey<number>(big), b = createContextKey<number>(big);
  const cut = `${"x".repeat(64)}… (a name of ${n} characters)`;
  assert.equal(String(a), `ContextKey(${cut})`);
  const ctx = Context.empty.with(a, 1).with(b, 2);
  assert.equal(String(ctx), `Context(${cut}=1, ${cut}=2)`);
  const hook = Symbol.for("Deno.customInspect");
  const call = (x: object, inspect: unknown) =>
    (x as unknown as Record<symbol, (...args: unknown[]) => string>)[hook](inspect, {});
  // Its first 64 quoted, the ellipsis and length after the closing quote, as a print's cut closes
  // its quote (before, inside it: `"xxxx… (a name of 268435456 characters)"`, as if the name's).
  const quoted = `"${"x".repeat(64)}"… (a name of ${n} characters)`;
  assert.equal(call(a, undefined), `ContextKey { name: ${quoted} }`);
  assert.equal(call(a, Deno.inspect), `ContextKey { name: ${quoted} }`);
  assert.equal(Deno.inspect(a), `ContextKey { name: ${quoted} }`);
  assert.equal(call(ctx, undefined), call(ctx, Deno.inspect));
  assert.equal(
    call(ctx, undefined).replace(/\s+/g, " "),
    `Context { [[keys]]: [ ${quoted}, ${quoted} ] }`,
  );
  assert.ok(call(ctx, undefined).length < 300, call(ctx, undefined));
  // A name of 4096 characters whole.
  const whole = "w".repeat(4096);
  assert.equal(String(createContextKey(whole)), `ContextKey(${whole})`);
});

Deno.test("a context's toString lists entries up to 65,536 characters and counts the rest: enough long entries went past the engine's string limit", () => {
  const keys = Array.from({ length: 100 }, (_, i) => createContextKey<string>(`k${i}`));
  let ctx = Context.empty;
  for (const k of keys) ctx = ctx.with(k, "v".repeat(4096));
  const text = String(ctx);
  // Each entry is `kN="v…v"` (4100 characters or so): 16 of them pass 65,536.
  assert.ok(text.startsWith(`Context(k0="${"v".repeat(4096)}", k1=`), text.slice(0, 80));
  assert.ok(text.endsWith(", …, 100 entries in all)"), text.slice(-80));
  assert.ok(text.length < 65_536 + 4200, `${text.length}`);
  // A small one whole, without the count.
  assert.equal(String(Context.empty.with(keys[0], "a")), 'Context(k0="a")');
});

Deno.test("children inherit the scope's context, down to grandchildren", async () => {
  const context = Context.empty.with(user, "ada");
  const seen = await coroutineScope(async (scope) => {
    const child = scope.async((task) =>
      task.async((grandchild) =>
        [scope.context, task.context, grandchild.context].map((c) => c.get(user))
      )
        .await()
    );
    return await child.await();
  }, { context });
  assert.deepEqual(seen, ["ada", "ada", "ada"]);
});

Deno.test("a child given its own context changes neither its parent nor its siblings", async () => {
  const context = Context.empty.with(user, "ada").with(depth, 0);
  await supervisorScope(async (scope) => {
    const child = scope.async(
      (task) => {
        const inner = task.async((t) => t.context.get(depth)); // inherits the override
        return inner.await();
      },
      { context: scope.context.with(depth, 1) },
    );
    const sibling = scope.async((task) => task.context.get(depth));
    assert.equal(await child.await(), 1);
    assert.equal(await sibling.await(), 0);
    assert.equal(scope.context.get(depth), 0);
  }, { context });
});

Deno.test("the context is readable from every task of a free-standing scope", async () => {
  await using scope = createScope({ context: Context.empty.with(user, "grace") });
  const names = await Promise.all(
    Array.from({ length: 5 }, () => scope.async((t) => t.context.get(user)).await()),
  );
  assert.deepEqual(names, Array(5).fill("grace"));
});

Deno.test("bad keys and names are TypeErrors that say what was received", () => {
  assert.throws(() => createContextKey(42 as never), {
    name: "TypeError",
    message: "Cannot create context key: name must be a string, received 42",
  });
  assert.throws(
    () => Context.empty.with({ name: "fake" } as never, 1),
    /key must come from createContextKey, received \[object Object\]/,
  );
  assert.throws(() => Context.empty.get("user" as never), /received "user"/);
  assert.throws(() => Context.empty.without(null as never), /received null/);
  // kcoro's own keys check their values (a wrong one used to fail later, deep inside).
  assert.throws(
    () => Context.empty.with(Deadline, "soon" as never),
    /Cannot set context value: deadline must be a number \(performance.now\(\) ms\), received "soon"/,
  );
  // A wrong type is a TypeError, NaN (a number out of range) a RangeError, as delay's NaN is (it
  // was a TypeError too).
  assert.throws(() => Context.empty.with(Deadline, "soon" as never), { name: "TypeError" });
  assert.throws(() => Context.empty.with(Deadline, NaN), {
    name: "RangeError",
    message:
      "Cannot set context value: deadline must be a number (performance.now() ms), received NaN",
  });
  assert.equal(Context.empty.with(Deadline, -Infinity).get(Deadline), -Infinity); // passed
  assert.throws(
    () => Context.empty.with(CoroutineExceptionHandler, 42 as never),
    /CoroutineExceptionHandler must be a function, received 42/,
  );
});

Deno.test("a child given a context under a scope of many keys (or given many) gets the scope's entries with the given ones set on them, in order, as with a few", async () => {
  // A context of more than 16 entries is a trie, which the merge of a child's context sets the
  // given entries on one at a time (two small ones are copied once): the same entries, in the
  // same order, either way.
  const many = Array.from({ length: 40 }, (_, i) => createContextKey<number>(`m${i}`));
  for (const [scopeKeys, givenKeys] of [[30, 5], [5, 30], [30, 30], [3, 4], [10, 6]]) {
    let scopes = Context.empty, given = Context.empty;
    const model = new Map<ContextKey<number>, number>();
    for (const k of many.slice(0, scopeKeys)) {
      scopes = scopes.with(k, 1);
      model.set(k, 1);
    }
    for (const k of many.slice(40 - givenKeys)) {
      given = given.with(k, 2);
      model.set(k, 2);
    }
    await coroutineScope(async (scope) => {
      const child = scope.async((task) => task.context, { context: given });
      assertHolds(await child.await(), model, many, `${scopeKeys} and ${givenKeys}`);
    }, { context: scopes });
  }
});

Deno.test("a child given a context adds its entries to the scope's: the others are inherited, the given ones win (Kotlin's launch(context))", async () => {
  // Before, the given context replaced the scope's: a child given only `depth` lost `user` and
  // the CoroutineExceptionHandler, so its failure under a supervisor went to reportError.
  const reported: unknown[] = [];
  const context = Context.empty.with(user, "ada").with(depth, 0)
    .with(CoroutineExceptionHandler, (e) => reported.push(e));
  const boom = new Error("a child given its own context");
  await supervisorScope(async (scope) => {
    const own = Context.empty.with(depth, 1);
    const a = scope.async((task) => [task.context.get(user), task.context.get(depth)], {
      context: own,
    });
    assert.deepEqual(await a.await(), ["ada", 1]);
    // Its own children inherit the merged context.
    const b = scope.launch((task) => {
      const inner = task.async((t) => [t.context.get(user), t.context.get(depth)]);
      return inner.await().then((v) => assert.deepEqual(v, ["ada", 1]));
    }, { context: own });
    await b.join();
    assert.equal(b.state, "completed");
    // The scope's keys first, in their order, then the given ones that are new.
    const extra = createContextKey<string>("extra");
    const keys = scope.async((t) => t.context.keys(), {
      context: Context.empty.with(extra, "x").with(depth, 2),
    });
    assertSameItems(await keys.await(), [user, depth, CoroutineExceptionHandler, extra]);
    // Given the empty context, the child's is the scope's own.
    assert.equal(await scope.async((t) => t.context, { context: Context.empty }).await(), context);
    // A failure under the supervisor reaches the scope's handler.
    await scope.launch(() => {
      throw boom;
    }, { context: own }).join();
    assert.equal(scope.context.get(depth), 0); // the scope's own is unchanged
  }, { context });
  assertSameItems(reported, [boom]);
});

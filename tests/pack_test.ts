// The packed encoding of plain data (src/pack.ts): what it copies matches structured clone,
// references stay shared, anything else is left to node:v8, and malformed bytes are errors.
import assert from "node:assert/strict";
import { pack, packed, unpack } from "../src/pack.ts";
import { Channel, codecs } from "../mod.ts";
import { prng } from "./support.ts";

/** pack + unpack through a copy of the bytes (the channel copies them too). */
function roundTrip(v: unknown): unknown {
  const n = pack(v);
  assert.ok(n >= 0, `packable: ${Deno.inspect(v)}`);
  return unpack(packed().slice(0, n));
}

Deno.test("pack: plain data comes back as structured clone would copy it", () => {
  const values: unknown[] = [
    undefined,
    null,
    true,
    false,
    0,
    -0,
    1,
    -1,
    2 ** 31 - 1,
    -(2 ** 31),
    2 ** 31,
    -(2 ** 31) - 1,
    0.5,
    NaN,
    Infinity,
    -Infinity,
    Number.MAX_VALUE,
    Number.MIN_VALUE,
    "",
    "a",
    "sixteen chars..!",
    "seventeen chars..",
    "héllo ☃ 𝄞 😀",
    "\u0000\u007f",
    "x".repeat(100_000),
    0n,
    -1n,
    2n ** 200n + 12345n,
    -(2n ** 64n),
    new Date(0),
    new Date(8.64e15),
    new Date(NaN),
    {},
    { a: 1, b: "two", c: [3, { d: null }], e: undefined },
    { 2: "two", 1: "one", z: 0, a: 1 }, // integer keys first, then insertion order
    { __proto__: null, a: 1 },
    JSON.parse('{"__proto__": {"x": 1}}'), // an own property named __proto__
    [],
    [1, "2", [3, [4, [5]]], {}],
    new Array(1000).fill(0).map((_, i) => i * 1.5),
    { "ключ": "значение", "": "empty key", "a long key of more than sixteen bytes": 1 },
  ];
  for (const v of values) {
    const got = roundTrip(v);
    assert.deepEqual(got, structuredClone(v), Deno.inspect(v));
    if (v !== null && typeof v === "object") {
      assert.equal(Object.getPrototypeOf(got), Object.getPrototypeOf(structuredClone(v)));
      assert.deepEqual(Object.keys(got as object), Object.keys(structuredClone(v)));
    }
  }
  assert.ok(Object.is(roundTrip(-0), -0));
  const own = roundTrip(JSON.parse('{"__proto__": {"x": 1}}')) as object;
  assert.equal(Object.getPrototypeOf(own), Object.prototype); // a data property, not a prototype
  assert.deepEqual(Object.getOwnPropertyDescriptor(own, "__proto__")?.value, { x: 1 });
});

Deno.test("pack: shared and circular references stay shared", () => {
  const shared = { s: 1 };
  const when = new Date(5);
  const v = { a: shared, b: shared, list: [shared, when, when] } as Record<string, unknown>;
  v.self = v;
  const got = roundTrip(v) as typeof v & { a: object; list: unknown[] };
  assert.equal(got.a, got.b);
  assert.equal(got.list[0], got.a);
  assert.equal(got.list[1], got.list[2]);
  assert.ok(got.list[1] instanceof Date);
  assert.equal(got.self, got);
  const ring: unknown[] = [];
  ring.push(ring);
  const r = roundTrip(ring) as unknown[];
  assert.equal(r[0], r);
});

Deno.test("pack: anything beyond plain data is left to node:v8 (-1)", () => {
  class Point {
    x = 1;
  }
  const holes = [1, , 3];
  const extra = Object.assign([1, 2], { note: "kept by structured clone" });
  class Day extends Date {}
  for (
    const v of [
      new Map([[1, 2]]),
      new Set([1]),
      new Uint8Array([1]),
      new ArrayBuffer(1),
      new Point(),
      holes,
      extra,
      new Day(0),
      Object.create(Date.prototype),
      /re/,
      "lone \ud800 surrogate", // structured clone keeps it; UTF-8 cannot
      { key: ["\udfff"] },
      new Error("e"),
      new Boolean(true),
      { nested: { deeper: [new Map()] } },
      () => 1,
      Symbol("s"),
    ]
  ) {
    assert.equal(pack(v), -1, Deno.inspect(v));
  }
});

Deno.test("pack: a getter's error propagates; a getter that packs gets -1 and the outer value is intact", () => {
  assert.throws(
    () =>
      pack({
        get boom() {
          throw new RangeError("from the getter");
        },
      }),
    RangeError,
  );
  let inner = 0;
  const v = {
    a: "before",
    get b() {
      inner = pack({ other: [1, 2, 3] });
      return "b";
    },
    c: "after",
  };
  assert.deepEqual(roundTrip(v), { a: "before", b: "b", c: "after" });
  assert.equal(inner, -1);
  // And the next value packs normally.
  assert.deepEqual(roundTrip({ next: 1 }), { next: 1 });
});

Deno.test("unpack: malformed bytes are TypeErrors, never a crash or a huge allocation", () => {
  const n = pack({ a: [1, "two", 3n, new Date(1)] });
  const good = packed().slice(0, n);
  for (let cut = 0; cut < good.length; cut++) {
    assert.throws(() => unpack(good.subarray(0, cut)), TypeError, `cut at ${cut}`);
  }
  assert.throws(() => unpack(new Uint8Array([99])), /tag 99/);
  assert.throws(() => unpack(new Uint8Array([8, 255, 255, 255, 255])), /array longer/);
  assert.throws(() => unpack(new Uint8Array([11, 0, 0, 0, 0])), /reference 0 to nothing/);
  assert.throws(() => unpack(new Uint8Array([1, 1])), /left over/);
  assert.deepEqual(unpack(good), { a: [1, "two", 3n, new Date(1)] }); // still fine after
});

/** A random plain value (seeded), up to `depth` levels. */
function randomValue(next: () => number, depth: number): unknown {
  const pick = Math.floor(next() * (depth > 0 ? 10 : 7));
  switch (pick) {
    case 0:
      return Math.floor(next() * 2 ** 32) - 2 ** 31;
    case 1:
      return (next() - 0.5) * 1e12;
    case 2:
      return String.fromCharCode(
        ...Array.from({ length: Math.floor(next() * 40) }, () => Math.floor(next() * 0x2fff)),
      );
    case 3:
      return [null, undefined, true, false][Math.floor(next() * 4)];
    case 4:
      return BigInt(Math.floor(next() * 2 ** 52)) * (next() < 0.5 ? -1n : 1n) * 2n ** 70n;
    case 5:
      return new Date(Math.floor(next() * 1e12));
    case 6:
      return "k" + Math.floor(next() * 100);
    case 7:
    case 8: {
      const o: Record<string, unknown> = {};
      for (let i = Math.floor(next() * 6); i > 0; i--) {
        o[String(randomValue(next, 0)).slice(0, 12)] = randomValue(next, depth - 1);
      }
      return o;
    }
    default:
      return Array.from({ length: Math.floor(next() * 6) }, () => randomValue(next, depth - 1));
  }
}

Deno.test("pack: seeded random plain data matches structured clone (seeds 1..300)", () => {
  for (let seed = 1; seed <= 300; seed++) {
    const v = randomValue(prng(seed), 4);
    assert.deepEqual(roundTrip(v), structuredClone(v), `seed ${seed}`);
  }
});

Deno.test("structured values through a shared channel: packed or node:v8, each comes back", () => {
  class Point {
    x = 1;
  }
  const values = [
    { id: 1, tags: ["a"], at: new Date(3) },
    new Map([["k", { v: 1 }]]), // node:v8
    [1, , 3], // node:v8 keeps the hole
    new Point(), // node:v8: a plain object comes back
    { big: 2n ** 100n },
  ];
  for (const codec of [codecs.structured, codecs.default]) {
    using ch = new Channel<unknown>(values.length, { codec });
    ch.share();
    for (const v of values) assert.equal(ch.trySend(v).state, "ok");
    for (const v of values) {
      assert.deepEqual(ch.tryReceive(), { state: "ok", value: structuredClone(v) });
    }
  }
});

// The packed encoding of plain data (src/pack.ts): what it copies matches structured clone,
// references stay shared, anything else is left to node:v8, and malformed bytes are errors.
import assert from "node:assert/strict";
import { pack, packed, unpack } from "../src/pack.ts";
import { Channel, codecs } from "../mod.ts";
import { prng } from "./support.ts";

const encoder = new TextEncoder();

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

Deno.test("pack: Maps, Sets, buffers, views and RegExps come back as structured clone copies them", () => {
  const ab = new ArrayBuffer(16);
  new Uint8Array(ab).forEach((_, i, a) => a[i] = i * 7);
  const values: unknown[] = [
    new Map(),
    new Map<unknown, unknown>([[1, 2], ["a", { b: [1] }], [{ k: 1 }, new Date(2)], [NaN, -0]]),
    new Set(),
    new Set<unknown>([1, "x", {}, [2], 3n]),
    new ArrayBuffer(0),
    ab,
    new Uint8Array([1, 2, 3]),
    new Int8Array([-128, 127]),
    new Uint8ClampedArray([0, 255]),
    new Int16Array([-1, 2]),
    new Uint16Array([65535]),
    new Int32Array([-(2 ** 31)]),
    new Uint32Array([2 ** 32 - 1]),
    new Float32Array([1.5, -0, Infinity]),
    new Float64Array([Math.PI, NaN]),
    new BigInt64Array([-(2n ** 63n)]),
    new BigUint64Array([2n ** 64n - 1n]),
    new Uint8Array(ab, 3, 5), // a view of part of a buffer: the whole buffer goes along
    new Float32Array(ab, 8, 2),
    new DataView(ab, 2, 6),
    new Uint8Array(1000).fill(9),
    /ab+c/gi,
    /\u{1F600}|[^\n]/suy,
    { samples: new Float64Array([1, 2]), index: new Map([["a", new Set([1])]]) },
  ];
  const f16 = (globalThis as { Float16Array?: new (a: number[]) => unknown }).Float16Array;
  if (f16 !== undefined) values.push(new f16([1.5, -2]));
  for (const v of values) {
    const got = roundTrip(v);
    const clone = structuredClone(v);
    assert.deepEqual(got, clone, Deno.inspect(v));
    assert.equal(Object.getPrototypeOf(got), Object.getPrototypeOf(clone), Deno.inspect(v));
    if (ArrayBuffer.isView(v)) {
      const g = got as ArrayBufferView;
      assert.equal(g.byteOffset, v.byteOffset);
      assert.equal(g.buffer.byteLength, (v.buffer as ArrayBuffer).byteLength);
      assert.deepEqual(new Uint8Array(g.buffer), new Uint8Array(v.buffer as ArrayBuffer));
    }
  }
  assert.equal((roundTrip(Object.assign(/x/g, { lastIndex: 3 })) as RegExp).lastIndex, 0);
  assert.deepEqual([...(roundTrip(new Map([[2, "b"], [1, "a"]])) as Map<number, string>)], [
    [2, "b"],
    [1, "a"],
  ]); // insertion order
});

Deno.test("pack: views of one buffer share one copy of it; Maps and Sets keep references", () => {
  const ab = new ArrayBuffer(16);
  const v = { bytes: new Uint8Array(ab, 4, 4), floats: new Float32Array(ab, 8, 2), ab };
  const got = roundTrip(v) as typeof v;
  assert.equal(got.bytes.buffer, got.floats.buffer);
  assert.equal(got.bytes.buffer, got.ab);
  assert.notEqual(got.ab, ab);
  got.bytes[0] = 42;
  assert.equal(new Uint8Array(got.ab)[4], 42);
  const key = { k: 1 };
  const m = new Map<unknown, unknown>([[key, key]]);
  m.set("self", m);
  const s = new Set<unknown>([key]);
  s.add(s);
  const r = roundTrip({ m, s, key }) as { m: Map<unknown, unknown>; s: Set<unknown>; key: object };
  assert.equal(r.m.get("self"), r.m);
  assert.equal([...r.m.keys()][0], r.key);
  assert.equal(r.m.get(r.key), r.key);
  assert.ok(r.s.has(r.s) && r.s.has(r.key));
  const same = new Uint8Array([5]);
  const pair = roundTrip([same, same]) as Uint8Array[];
  assert.equal(pair[0], pair[1]);
});

Deno.test("pack: a getter that adds to a Map while it is packed: the count is what was written", () => {
  const m = new Map<string, unknown>();
  m.set("a", {
    get grow() {
      m.set("late", 1); // forEach visits entries added on the way, as structured clone would
      return 1;
    },
  });
  const got = roundTrip(m) as Map<string, unknown>;
  assert.deepEqual([...got.keys()], ["a", "late"]);
});

Deno.test("pack: anything beyond plain data is left to node:v8 (-1)", () => {
  class Point {
    x = 1;
  }
  const holes = [1, , 3];
  const extra = Object.assign([1, 2], { note: "kept by structured clone" });
  class Day extends Date {}
  class Bytes extends Uint8Array {}
  class Index extends Map {}
  const detached = new ArrayBuffer(8);
  const onDetached = new Uint8Array(detached);
  structuredClone(detached, { transfer: [detached] });
  const resizable = new ArrayBuffer(4, { maxByteLength: 8 });
  for (
    const v of [
      new Point(),
      holes,
      extra,
      new Day(0),
      Object.create(Date.prototype),
      Object.create(Map.prototype),
      Object.create(Uint8Array.prototype),
      Object.create(ArrayBuffer.prototype),
      Object.create(RegExp.prototype),
      new Proxy(new Map(), {}),
      new Proxy(new Set(), {}),
      new Bytes(2),
      new Index(),
      detached,
      onDetached,
      resizable,
      new Uint8Array(resizable), // tracks its buffer's length
      new SharedArrayBuffer(4),
      new Int32Array(new SharedArrayBuffer(4)),
      "lone \ud800 surrogate", // structured clone keeps it; UTF-8 cannot
      { key: ["\udfff"] },
      new Map([["k", "\ud800"]]),
      new RegExp("\ud800"),
      new Error("e"),
      new Boolean(true),
      { nested: { deeper: [new Point()] } },
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
  assert.throws(() => unpack(new Uint8Array([15, 255, 255, 255, 255])), /buffer longer/);
  assert.throws(() => unpack(new Uint8Array([16, 200])), /view kind 200/);
  // A bigint's text that is not hex digits (BigInt() threw a SyntaxError), or is but for spaces.
  const big = (text: string) => new Uint8Array([9, text.length, 0, 0, 0, ...encoder.encode(text)]);
  for (const text of ["", "-", "zz", "--1", "0x1", " 1", "1 ", "+1", "1_0", "é"]) {
    assert.throws(() => unpack(big(text)), { name: "TypeError", message: /\(bigint\)/ }, text);
  }
  assert.equal(unpack(big("-ff")), -255n);
  // A Uint8Array whose buffer is a string, one outside its buffer, a misaligned Int32Array.
  const view = (kind: number, buffer: number[], offset: number, length: number) =>
    new Uint8Array([16, kind, ...buffer, offset, 0, 0, 0, length, 0, 0, 0]);
  assert.throws(() => unpack(view(1, [6, 0, 0, 0, 0], 0, 0)), /something else/);
  assert.throws(() => unpack(view(1, [15, 2, 0, 0, 0, 1, 2], 1, 2)), /outside its buffer/);
  assert.throws(() => unpack(view(5, [15, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 2, 1)), /outside/);
  assert.deepEqual(
    unpack(view(1, [15, 2, 0, 0, 0, 1, 2], 1, 1)),
    new Uint8Array([1, 2]).subarray(1),
  );
  assert.throws(
    () => unpack(new Uint8Array([12, 1, 0, 0, 0, 40, 0, 0, 0, 0])),
    /regular expression/,
  );
  const nm = pack(new Map([[new Uint8Array([1]), new Set([/r/])]]));
  const map = packed().slice(0, nm);
  for (let cut = 0; cut < map.length; cut++) {
    assert.throws(() => unpack(map.subarray(0, cut)), TypeError, `map cut at ${cut}`);
  }
  assert.deepEqual(unpack(good), { a: [1, "two", 3n, new Date(1)] }); // still fine after
});

/** A random plain value (seeded), up to `depth` levels. */
function randomValue(next: () => number, depth: number): unknown {
  const pick = Math.floor(next() * (depth > 0 ? 13 : 7));
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
    case 10:
      return new Map(
        Array.from(
          { length: Math.floor(next() * 4) },
          () => [randomValue(next, 0), randomValue(next, depth - 1)],
        ),
      );
    case 11:
      return new Set(Array.from({ length: Math.floor(next() * 4) }, () => randomValue(next, 0)));
    case 12: {
      const ctor = [Uint8Array, Int16Array, Float32Array, Float64Array][Math.floor(next() * 4)];
      const xs = Array.from(
        { length: Math.floor(next() * 8) },
        () => Math.floor(next() * 200) - 100,
      );
      return new (ctor as Float64ArrayConstructor)(xs);
    }
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

Deno.test("pack: seeded random data matches structured clone (seeds 1..300)", () => {
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
    new Map([["k", { v: 1 }]]),
    { samples: new Float32Array([0.5, 1]), seen: new Set(["a"]) },
    new Error("boom"), // node:v8
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

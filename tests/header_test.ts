// ffi/symbols.ts must agree with include/kcoro.h: every symbol is declared there with the
// same parameter count and compatible types, and every header function is in the table
// unless it may only be called from inside a coroutine.
import assert from "node:assert/strict";
import { symbols } from "../ffi/symbols.ts";

const header = Deno.readTextFileSync(new URL("../include/kcoro.h", import.meta.url));
// Called from inside native coroutines (or, for kc_sleep_ns, blocking the calling thread).
const onlyInsideCoroutine = new Set([
  "kc_coro_yield",
  "kc_coro_yield_value",
  "kc_coro_park",
  "kc_sleep_ns",
  "kc_park_until",
  "kc_actor_take",
]);

function cTypeToFfi(t: string): string[] {
  // Drop qualifiers and the parameter name, keep the type: "uint32_t *out" -> "uint32_t*".
  const bare = t.replace(/\b(const|volatile)\b/g, "").trim();
  const named = /^(.*?[\s*])(\w+)$/.exec(bare);
  const c = (named && named[1].trim() !== "" ? named[1] : bare).replace(/\s+/g, "");
  if (c === "uint32_t") return ["u32"];
  if (c === "int32_t") return ["i32"];
  if (c === "uint64_t") return ["u64"];
  if (c === "void") return ["void"];
  if (
    ["kc_entry_fn", "kc_undelivered_fn", "kc_handler_fn", "kc_done_fn", "kc_notify_fn"].includes(c)
  ) {
    return ["pointer", "function"];
  }
  // A void * is a pointer, a caller-owned buffer, or (kc_coro_create) an integer in its register.
  if (c === "void*") return ["pointer", "buffer", "usize"];
  if (c.endsWith("*")) return ["pointer", "buffer"];
  throw new Error(`unmapped C type ${t}`);
}

const prototypes = new Map<string, { result: string; params: string[] }>();
for (const m of header.matchAll(/^([a-z_0-9 ]+\**)\s*\**\s*(kc_\w+)\(([^)]*)\);/gm)) {
  const star = /\*\s*kc_/.test(m[0]) ? "*" : "";
  const params = m[3].trim() === "void" ? [] : m[3].split(",").map((p) => p.trim());
  prototypes.set(m[2], { result: m[1].trim() + star, params });
}

Deno.test("the header declares the functions the tests expect", () => {
  assert.ok(prototypes.size >= 14, `parsed ${prototypes.size} prototypes`);
});

Deno.test("every symbol in ffi/symbols.ts matches its prototype in include/kcoro.h", () => {
  for (const [key, def] of Object.entries(symbols)) {
    const name = "name" in def ? def.name : key;
    const proto = prototypes.get(name);
    assert.ok(proto, `${name} is not declared in include/kcoro.h`);
    assert.equal(def.parameters.length, proto.params.length, `${name}: parameter count`);
    def.parameters.forEach((p, i) => {
      const allowed = cTypeToFfi(proto.params[i]);
      assert.ok(allowed.includes(p), `${name} parameter ${i}: ${p} vs C ${proto.params[i]}`);
    });
    const allowed = cTypeToFfi(proto.result);
    assert.ok(allowed.includes(def.result), `${name} result: ${def.result} vs C ${proto.result}`);
  }
});

Deno.test("every header function is in the symbol table or documented as coroutine-only", () => {
  // An entry may bind a function under another key (`name`: its nonblocking form, say).
  const bound = new Set(
    Object.entries(symbols).map(([key, def]) => (def as { name?: string }).name ?? key),
  );
  for (const name of prototypes.keys()) {
    assert.ok(
      bound.has(name) || onlyInsideCoroutine.has(name),
      `${name} missing from ffi/symbols.ts`,
    );
  }
});

Deno.test("the header's value tags are the ones the TypeScript codecs write", async () => {
  const { Channel, codecs, library } = await import("../mod.ts");
  const sym = library().symbols("test");
  const tag = (name: string) => Number(new RegExp(`#define ${name} (\\d+)`).exec(header)![1]);
  for (
    const [codec, value, name] of [
      [codecs.string, "text", "KC_TAG_STRING"],
      [codecs.bytes, new Uint8Array([1]), "KC_TAG_BYTES"],
      [codecs.default, "text", "KC_TAG_STRING"],
      [codecs.default, new Uint8Array([1]), "KC_TAG_BYTES"],
      [codecs.structured, { a: 1 }, "KC_TAG_PACKED"],
      [codecs.structured, new Error("x"), "KC_TAG_STRUCTURED"],
      [codecs.default, { a: 1 }, "KC_TAG_PACKED"],
      [codecs.default, new Error("x"), "KC_TAG_STRUCTURED"],
      // Empty: {NULL, 0, NULL, tag}, as kcoro.h's "What TypeScript sends" says.
      [codecs.string, "", "KC_TAG_STRING"],
      [codecs.bytes, new Uint8Array(0), "KC_TAG_BYTES"],
      [codecs.default, "", "KC_TAG_STRING"],
      [codecs.default, new Uint8Array(0), "KC_TAG_BYTES"],
    ] as const
  ) {
    using ch = new Channel<unknown>(1, { codec: codec as never });
    assert.equal(ch.trySend(value).state, "ok");
    const desc = new Uint32Array(8);
    assert.equal(sym.kc_chan_try_recv(ch.handle, Deno.UnsafePointer.of(desc), 32), 0);
    assert.equal(desc[6], tag(name), `${codec.name} ${name}`);
    const empty = value instanceof Uint8Array ? value.length === 0 : value === "";
    if (empty) assert.deepEqual([...desc], [0, 0, 0, 0, 0, 0, tag(name), 0], `${codec.name} empty`);
    sym.kc_desc_free(Deno.UnsafePointer.of(desc));
  }
});

Deno.test("kc_chan_compute_rate writes exactly the doubles its comment names (root.zig's out array)", async () => {
  // The comment said out[0..6], which reads as seven values, or six; a C caller sizing `out`
  // by it needs the count.
  const root = Deno.readTextFileSync(new URL("../zig-src/root.zig", import.meta.url));
  const n = Number(/export fn kc_chan_compute_rate\([^)]*out: \?\*\[(\d+)\]f64\)/.exec(root)![1]);
  const comment = /\/\*((?:(?!\*\/)[\s\S])*)\*\/\s*int32_t kc_chan_compute_rate\(/.exec(header)![1];
  assert.match(
    comment.replace(/\s*\*\s*/g, " "),
    new RegExp(`writes ${n} doubles, out\\[0\\] to out\\[${n - 1}\\]`),
  );
  // And it writes that many: a guard after them stays as it was.
  const { library } = await import("../mod.ts");
  const sym = library().symbols("test");
  const earlier = new BigUint64Array(13), later = new BigUint64Array(13);
  earlier[11] = 1_000_000_000n; // taken_ns
  later[0] = 10n; // sends
  later[8] = 4n; // dropped
  later[11] = 2_000_000_000n;
  const out = new Float64Array(n + 1).fill(-1);
  assert.equal(sym.kc_chan_compute_rate(earlier, later, out), 0);
  assert.deepEqual([...out.subarray(0, n)], [10, 0, 0, 0, 0, 4]); // per second, over 1 s
  assert.equal(out[n], -1);
});

Deno.test("the library exports exactly the functions include/kcoro.h declares (nm -D of the loaded libkcoro.so)", async () => {
  // root.zig's test checks each header prototype against its export; this checks the other way:
  // an export the header lacks is a function a C user cannot see (and a typo'd prototype one
  // that does not link). Skipped where binutils' nm is not installed.
  const { library } = await import("../mod.ts");
  let out;
  try {
    out = await new Deno.Command("nm", {
      args: ["-D", "--defined-only", library().path],
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch {
    console.log("(nm not found: skipped)");
    return;
  }
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  const exported = new Set(
    [...new TextDecoder().decode(out.stdout).matchAll(/^\S+ T (kc_\w+)$/gm)].map((m) => m[1]),
  );
  assert.ok(exported.size >= 100, `nm -D listed ${exported.size} kc_ functions`);
  const declared = new Set(prototypes.keys());
  assert.deepEqual([...exported].filter((n) => !declared.has(n)), [], "exported, not in kcoro.h");
  assert.deepEqual([...declared].filter((n) => !exported.has(n)), [], "in kcoro.h, not exported");
});

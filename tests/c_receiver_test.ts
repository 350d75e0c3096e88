// C code receiving what TypeScript sent on a shared zero-copy channel: kcoro.h's rule for the
// descriptors the codecs write ("ptr/len are the bytes, ctx is the tag"; ptr NULL: no bytes, len
// 0 an empty value, any other len a default codec's value carried in the descriptor). The C half
// is a small shared library built here with `zig cc` and loaded into this isolate with
// Deno.dlopen; it finds the library this process already loaded (dlopen RTLD_NOLOAD of its
// path), receives with kc_chan_try_recv, reads the descriptor by the rule alone and frees it
// with kc_desc_free, as a C consumer of a channel TypeScript feeds would.
import assert from "node:assert/strict";
import { Channel, type Codec, codecs, library } from "../mod.ts";

const root = new URL("../", import.meta.url).pathname;

const source = `#include <dlfcn.h>
#include <stdint.h>
#include <string.h>
#include "kcoro.h"

typedef int32_t (*try_recv_fn)(uint32_t, void *, uint32_t);
typedef int32_t (*desc_free_fn)(const struct kc_desc *);
static try_recv_fn try_recv;
static desc_free_fn desc_free;

int32_t kct_init(const char *path) {
  void *lib = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
  if (!lib) return -1;
  try_recv = (try_recv_fn)dlsym(lib, "kc_chan_try_recv");
  desc_free = (desc_free_fn)dlsym(lib, "kc_desc_free");
  return try_recv && desc_free ? 0 : -1;
}

/* One value off the channel, read by kcoro.h's rule: info[0] its form (0 bytes at ptr, 1 an
 * empty value, 2 a value in the descriptor), info[1] its length (form 2: the len word, a kind),
 * info[2] its ctx (forms 0 and 1: the tag), info[3] its release (always NULL from TypeScript).
 * Form 0's bytes (up to cap) go to out. Freed with kc_desc_free whatever its form. */
int32_t kct_recv(uint32_t handle, uint8_t *out, uint32_t cap, uint64_t *info) {
  struct kc_desc d;
  int32_t rc = try_recv(handle, &d, sizeof d);
  if (rc != KC_OK) return rc;
  info[3] = (uint64_t)(uintptr_t)d.release;
  info[2] = (uint64_t)(uintptr_t)d.ctx;
  info[1] = d.len;
  if (d.ptr != NULL) {
    info[0] = 0;
    memcpy(out, d.ptr, d.len < cap ? d.len : cap);
  } else {
    info[0] = d.len == 0 ? 1 : 2;
  }
  return desc_free(&d);
}
`;

type Lib = Deno.DynamicLibrary<{
  kct_init: { parameters: ["buffer"]; result: "i32" };
  kct_recv: { parameters: ["u32", "buffer", "u32", "buffer"]; result: "i32" };
}>;

/**
 * Builds the C half in a temporary directory and runs `test` with it loaded; closes it and
 * removes the directory however `test` ends.
 */
async function withReceiver(test: (lib: Lib) => void): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    const lib = await build(dir);
    try {
      test(lib);
    } finally {
      lib.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function build(dir: string): Promise<Lib> {
  await Deno.writeTextFile(`${dir}/receiver.c`, source);
  const zig = Deno.env.get("KCORO_ZIG") ?? `${root}.toolchain/zig/bin/zig`;
  const so = `${dir}/libreceiver.so`;
  const built = await new Deno.Command(zig, {
    args: ["cc", "-shared", "-fPIC", `-I${root}include`, `${dir}/receiver.c`, "-o", so, "-ldl"],
    stderr: "piped",
  }).output();
  assert.ok(built.success, new TextDecoder().decode(built.stderr));
  const lib = Deno.dlopen(so, {
    kct_init: { parameters: ["buffer"], result: "i32" },
    kct_recv: { parameters: ["u32", "buffer", "u32", "buffer"], result: "i32" },
  }) as Lib;
  const path = new TextEncoder().encode(`${library().path}\0`);
  assert.equal(lib.symbols.kct_init(path), 0, "the C half finds the loaded libkcoro");
  return lib;
}

const KC_TAG_STRING = 16, KC_TAG_BYTES = 17, KC_TAG_STRUCTURED = 18, KC_TAG_PACKED = 19;

interface Seen {
  form: "bytes" | "empty" | "in descriptor";
  len: number;
  ctx: bigint;
  bytes: Uint8Array;
}

/** What the C half read of the next value on `handle` (and freed). */
function receive(lib: Lib, handle: number, cap = 1 << 20): Seen {
  const out = new Uint8Array(cap), info = new BigUint64Array(4);
  assert.equal(lib.symbols.kct_recv(handle, out, cap, info), 0, "kc_chan_try_recv, kc_desc_free");
  assert.equal(info[3], 0n, "TypeScript's descriptors have no release");
  const form = (["bytes", "empty", "in descriptor"] as const)[Number(info[0])];
  const len = Number(info[1]);
  return { form, len, ctx: info[2], bytes: form === "bytes" ? out.slice(0, len) : out.slice(0, 0) };
}

const enc = new TextEncoder();
// Past the pool's 16 KiB slices (a malloc'd buffer), and past the 64 Ki units that
// src/codec.ts's putString encodes into its reused buffer (encoded on their own).
const STRINGS = [
  "",
  "a",
  "short",
  "héllo wörld ✓ 😀",
  "ü".repeat(10_000), // 20,000 UTF-8 bytes
  "x".repeat(70_000) + "€",
];
const BYTES = [
  new Uint8Array(0),
  new Uint8Array([0xff]),
  new Uint8Array([0, 1, 2, 3, 4, 5, 6]),
  new Uint8Array(20_000).map((_, i) => i * 7),
];

/**
 * Sends `values` on a shared channel of `codec`, one trySend each, then in one trySendMany, and
 * checks each as the C half reads it: an empty one {NULL, 0, NULL, tag}; any other ptr/len its
 * `bytes`, ctx `tag`. `unit` names what a value's length counts, in the messages.
 */
function assertArriveInC<T extends { length: number }>(
  lib: Lib,
  codec: Codec<unknown>,
  values: T[],
  tag: number,
  bytes: (value: T) => Uint8Array,
  unit: string,
) {
  using ch = new Channel<T>(64, { codec: codec as never });
  const { handle } = ch.share();
  for (const many of [false, true]) {
    if (many) assert.deepEqual(ch.trySendMany(values), { state: "ok", sent: values.length });
    else for (const v of values) assert.deepEqual(ch.trySend(v), { state: "ok" });
    for (const v of values) {
      const what = `${codec.name}${many ? " trySendMany" : ""}: ${v.length} ${unit}`;
      const seen = receive(lib, handle);
      if (v.length === 0) {
        assert.deepEqual(
          seen,
          { form: "empty", len: 0, ctx: BigInt(tag), bytes: seen.bytes },
          what,
        );
      } else {
        assert.equal(seen.form, "bytes", what);
        assert.equal(seen.ctx, BigInt(tag), what);
        assert.deepEqual(seen.bytes, bytes(v), what);
      }
    }
  }
}

Deno.test("C ABI: strings TypeScript sends on codecs.string and the default codec arrive in C as kcoro.h says: ptr/len their UTF-8 bytes, ctx KC_TAG_STRING; an empty one {NULL, 0, NULL, KC_TAG_STRING}", async () => {
  // Before, an empty string arrived as {NULL, 7, NULL, ...}: a length of 7 bytes at NULL, which
  // a C receiver copying d.len bytes from d.ptr read (SIGSEGV).
  await withReceiver((lib) => {
    for (const codec of [codecs.string, codecs.default]) {
      assertArriveInC(lib, codec, STRINGS, KC_TAG_STRING, (s) => enc.encode(s), "units");
    }
  });
});

Deno.test("C ABI: bytes TypeScript sends on codecs.bytes and the default codec arrive in C as kcoro.h says: ptr/len the bytes, ctx KC_TAG_BYTES; empty ones {NULL, 0, NULL, KC_TAG_BYTES}", async () => {
  // Before, an empty Uint8Array arrived as {NULL, 8, NULL, ...}. codecs.bytes's trySend makes
  // and sends its descriptor in one native call; trySendMany goes through the codec's encode.
  await withReceiver((lib) => {
    for (const codec of [codecs.bytes, codecs.default]) {
      assertArriveInC(lib, codec, BYTES, KC_TAG_BYTES, (b) => b, "bytes");
    }
  });
});

Deno.test("C ABI: the default codec's other values reach C in the forms kcoro.h names: in the descriptor (ptr NULL, len its kind 1..6, not a length) or a buffer under KC_TAG_PACKED or KC_TAG_STRUCTURED", async () => {
  await withReceiver((lib) => {
    using ch = new Channel<unknown>(64);
    const { handle } = ch.share();
    const f64 = (x: number) => new BigUint64Array(new Float64Array([x]).buffer)[0];
    const cases: [unknown, Partial<Seen>][] = [
      [1.5, { form: "in descriptor", len: 1, ctx: f64(1.5) }],
      [-3n, { form: "in descriptor", len: 2, ctx: 2n ** 64n - 3n }],
      [true, { form: "in descriptor", len: 3, ctx: 0n }],
      [false, { form: "in descriptor", len: 4, ctx: 0n }],
      [null, { form: "in descriptor", len: 5, ctx: 0n }],
      [undefined, { form: "in descriptor", len: 6, ctx: 0n }],
      [{ a: 1 }, { form: "bytes", ctx: BigInt(KC_TAG_PACKED) }],
      [new Error("x"), { form: "bytes", ctx: BigInt(KC_TAG_STRUCTURED) }],
    ];
    // A slot last used for a number first: the kinds without a payload have ctx 0 all the same.
    for (const [value] of cases) assert.deepEqual(ch.trySend(value), { state: "ok" });
    for (const [value, want] of cases) {
      const seen = receive(lib, handle);
      for (const [k, v] of Object.entries(want)) {
        assert.equal(seen[k as keyof Seen], v, `${String(value)}: ${k}`);
      }
      if (seen.form === "bytes") assert.ok(seen.len > 0 && seen.bytes.length === seen.len);
    }
  });
});

Deno.test("C ABI: what TypeScript sends is freed by a C receiver's kc_desc_free: pooled buffers go back to the pool", async () => {
  await withReceiver((lib) => {
    const sym = library().symbols("test");
    const info = new BigUint64Array(4);
    const inUse = () => (sym.kc_pool_info(info), Number(info[3]));
    using text = new Channel<string>(64, { codec: codecs.string });
    using raw = new Channel<Uint8Array>(64, { codec: codecs.bytes });
    const t = text.share().handle, r = raw.share().handle;
    const s = "é".repeat(2048), b = new Uint8Array(4096).fill(3);
    const before = inUse();
    // 2 x 2,000 values of 4 KiB: 62 pool chunks of 128 KiB if none came back.
    for (let i = 0; i < 2000; i++) {
      assert.deepEqual(text.trySend(i % 2 ? s : ""), { state: "ok" });
      assert.deepEqual(raw.trySend(i % 2 ? b : new Uint8Array(0)), { state: "ok" });
      assert.equal(receive(lib, t, 8192).len, i % 2 ? 4096 : 0);
      assert.equal(receive(lib, r, 8192).len, i % 2 ? 4096 : 0);
    }
    const grew = inUse() - before;
    assert.ok(grew <= 4, `${grew} pool chunks held by values C received and freed`);
  });
});

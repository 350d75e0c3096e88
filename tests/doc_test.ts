// What `deno doc mod.ts` shows a user (and JSR its readers) must stand on its own: mod.ts is the
// only entry point, so the `@module` documentation of src/ files is not shown, and a symbol's
// JSDoc that sent the reader there ("see the module documentation") pointed at nothing. The
// README sections the JSDoc names instead must exist.
import assert from "node:assert/strict";
import { ABI_VERSION } from "../ffi/load.ts";

const root = new URL("../", import.meta.url).pathname;
const out = await new Deno.Command(Deno.execPath(), {
  args: ["doc", `${root}mod.ts`],
  env: { NO_COLOR: "1" },
  stdout: "piped",
  stderr: "piped",
}).output();
const doc = new TextDecoder().decode(out.stdout);
const readme = await Deno.readTextFile(`${root}README.md`);

Deno.test("deno doc mod.ts refers to no module documentation it does not show", () => {
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  assert.ok(doc.includes("class Channel"), "deno doc printed the API");
  for (const phrase of [/module documentation/i, /module's documentation/i]) {
    const at = doc.search(phrase);
    assert.equal(at, -1, `deno doc mod.ts says "${doc.slice(Math.max(0, at - 80), at + 40)}"`);
  }
});

Deno.test("every README.md section the API documentation names is a heading of the README", () => {
  const headings = new Set(
    [...readme.matchAll(/^#+ (.+)$/gm)].map((m) => m[1].trim()),
  );
  const named = [...doc.matchAll(/README\.md, "([^"]+)"/g)].map((m) => m[1].replace(/\s+/g, " "));
  assert.ok(named.length >= 6, `the API documentation names README sections: ${named}`);
  for (const section of named) assert.ok(headings.has(section), `README.md has no "${section}"`);
});

Deno.test("every public declaration of zig-src/kcoro.zig, the Zig package's root, has a doc comment", async () => {
  // A Zig user reads this file first (README: `dep.module("kcoro")`): it listed eighteen
  // namespaces with no word on which holds the scheduler, channels or scopes.
  const src = await Deno.readTextFile(`${root}zig-src/kcoro.zig`);
  const lines = src.split("\n");
  const bare = lines.flatMap((line, i) =>
    /^pub (const|fn|var) /.test(line) && !lines[i - 1]?.startsWith("///") ? [line] : []
  );
  assert.ok(lines.filter((l) => l.startsWith("pub ")).length >= 20, "kcoro.zig's declarations");
  assert.deepEqual(bare, [], "declarations without a /// comment");
  assert.match(src, /^\/\/! Where to start: /m);
});

Deno.test("every public function of the Zig API's scheduler, channel, scope, token and coroutine files has a doc comment", async () => {
  // Scheduler.shutdown had none (its comment had slid onto cancelPending, saying `start` where
  // `restart` is meant), Channel.submit's sat on a private helper, and Channel.create, select,
  // snapshot, Scope.cancel and others had none.
  const bare: string[] = [];
  for (
    const file of [
      "sched/scheduler.zig",
      "chan/channel.zig",
      "sc/scope.zig",
      "sc/cancel.zig",
      "coro/coroutine.zig",
      "coro/registry.zig",
    ]
  ) {
    const lines = (await Deno.readTextFile(`${root}zig-src/${file}`)).split("\n");
    lines.forEach((line, i) => {
      if (/^\s*pub fn /.test(line) && !/^\s*\/\/\//.test(lines[i - 1] ?? "")) {
        bare.push(`${file}:${i + 1}: ${line.trim()}`);
      }
    });
  }
  assert.deepEqual(bare, []);
});

Deno.test("README.md and include/kcoro.h name the C ABI version this module expects (ABI_VERSION)", async () => {
  // Each bump touches kcoro.zig, the header, ffi/load.ts and the README; the tests compared the
  // first three (the loaded library's kc_abi_version, the header's macro) but not the README,
  // whose Status still said 25 after the bump to 26 (kc_actor_take).
  const header = await Deno.readTextFile(`${root}include/kcoro.h`);
  assert.equal(Number(/#define KC_ABI_VERSION (\d+)/.exec(header)?.[1]), ABI_VERSION);
  const said = [...readme.matchAll(/the C ABI is\s+version\s+(\d+)/g)].map((m) => Number(m[1]));
  assert.deepEqual(said, [ABI_VERSION], 'README\'s Status: "the C ABI is version N"');
  assert.ok(
    readme.includes(`New in ABI ${ABI_VERSION}:`),
    `README's C ABI section says what is new in ABI ${ABI_VERSION}`,
  );
});

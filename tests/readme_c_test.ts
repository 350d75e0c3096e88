// Every C example in the README compiles against include/kcoro.h, links libkcoro (the shared
// library, then the static one) and prints what the README says it prints: each ```c block must
// be followed by a ```text block holding its exact standard output.
import assert from "node:assert/strict";

const root = new URL("../", import.meta.url).pathname;
const readme = await Deno.readTextFile(`${root}README.md`);
const examples = [...readme.matchAll(/```c\n([\s\S]*?)```\s*?\n```text\n([\s\S]*?)```/g)];

Deno.test("every ```c block of the README is followed by its ```text output", () => {
  assert.ok(examples.length > 0, "README.md has a ```c block");
  assert.equal(examples.length, [...readme.matchAll(/```c\n/g)].length);
});

for (const [i, [, source, expected]] of examples.entries()) {
  const first = /\n(?:static )?\w+ \**(\w+)\(/.exec(source)?.[1];
  Deno.test(`the README's C example ${i + 1} (${first}) builds with zig cc and runs`, async () => {
    const dir = await Deno.makeTempDir();
    try {
      await Deno.writeTextFile(`${dir}/demo.c`, source);
      const zig = Deno.env.get("KCORO_ZIG") ?? `${root}.toolchain/zig/bin/zig`;
      const build = await new Deno.Command(zig, {
        args: [
          "cc",
          `${dir}/demo.c`,
          `-I${root}include`,
          `-L${root}zig-out/lib`,
          "-lkcoro",
          "-o",
          `${dir}/demo`,
        ],
        stderr: "piped",
      }).output();
      assert.ok(build.success, new TextDecoder().decode(build.stderr));
      const run = await new Deno.Command(`${dir}/demo`, {
        env: { LD_LIBRARY_PATH: `${root}zig-out/lib` },
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.equal(run.code, 0, new TextDecoder().decode(run.stderr));
      assert.equal(new TextDecoder().decode(run.stdout), expected);
      // Linked statically against zig-out/lib/libkcoro.a, which `zig build` installs beside the
      // shared library: it runs the same with no library path (there was no static library).
      const staticBuild = await new Deno.Command(zig, {
        args: [
          "cc",
          `${dir}/demo.c`,
          `-I${root}include`,
          `${root}zig-out/lib/libkcoro.a`,
          "-o",
          `${dir}/demo-static`,
        ],
        stderr: "piped",
      }).output();
      assert.ok(staticBuild.success, new TextDecoder().decode(staticBuild.stderr));
      const env = { ...Deno.env.toObject() };
      delete env.LD_LIBRARY_PATH;
      const staticRun = await new Deno.Command(`${dir}/demo-static`, {
        env,
        clearEnv: true,
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.equal(staticRun.code, 0, new TextDecoder().decode(staticRun.stderr));
      assert.equal(new TextDecoder().decode(staticRun.stdout), expected);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

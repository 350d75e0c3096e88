// The README's C example compiles against include/kcoro.h, links libkcoro and prints what the
// README says it prints.
import assert from "node:assert/strict";

const root = new URL("../", import.meta.url).pathname;

Deno.test("the README's C example builds with zig cc and runs", async () => {
  const readme = await Deno.readTextFile(`${root}README.md`);
  const source = /```c\n([\s\S]*?)```/.exec(readme)?.[1];
  assert.ok(source, "README.md has a ```c block");
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
    }).output();
    assert.equal(run.code, 0);
    assert.equal(new TextDecoder().decode(run.stdout), "0\n1\n4\n9\n16\n");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// Runs each example of examples/ (demo.ts aside: tests/demo_test.ts) in a process of its own, with
// the command its header comment gives, and checks its exact output and exit code 0: a user
// copying one gets what it says, and it ends by itself.

import assert from "node:assert/strict";

const root = new URL("../", import.meta.url).pathname;

/** The output lines each example prints, in order. */
const expected: Record<string, string[]> = {
  "pipeline.ts": [
    "1. squares of 1..5: 1 4 9 16 25 (the close reached the consumer)",
    "   2 stages, 0 still running; the scope: completed",
    "2. the first ten primes: 2 3 5 7 11 13 17 19 23 29",
    "   cancelled 11 stages, 0 still running; the scope: cancelled",
  ],
  "worker_fanout.ts": [
    "3 Workers squared 1..100: 100 results, sum 338350",
    "every job exactly once: true; jobs taken by the Workers add up to 100",
    "nothing left: empty; jobs closed: true",
  ],
  "select_timeout.ts": [
    "1. received: number 1, number 2, number 3, numbers closed, word one, word two, words closed",
    "2. select over two idle channels: timed out after 20 ms",
    "3. select with a default: nothing ready",
    '4. withTimeoutOrNull: null while the inbox was empty, then "hello"',
  ],
  "actor_counter.ts": [
    "completed 10,000 actions",
    "Counter = 10000",
    "the actor: completed; replies still awaited: 0",
  ],
  "native_producers.ts": [
    "1. native producers sent 1000 + 1000 + 1000 values",
    "   TypeScript received 3000 values, sum 4498500, each once: true",
    "2. took 0 1 2 3 4 5 6 7 8 9, then cancelled the scope",
    "   the native producer: done true, sent 10 of 1000000",
  ],
  "structured.ts": [
    "1. coroutineScope threw: connection refused",
    "   fetch: failed (connection refused)",
    "   slow-a: cancelled",
    "   slow-b: cancelled",
    '2. supervisorScope completed: fetch failed with "connection refused", the others returned ' +
    '"after the close", "after the close"',
    "   fetch: failed (connection refused)",
    "   slow-a: returned after the close",
    "   slow-b: returned after the close",
  ],
};

/** The flags of the `deno run ... examples/<name>` line in the example's header comment. */
async function headerFlags(name: string): Promise<string[]> {
  const text = await Deno.readTextFile(`${root}examples/${name}`);
  const header = text.slice(0, text.indexOf("*/"));
  const line = header.match(new RegExp(`deno run ((?:--[\\w-]+(?:=\\S+)? )+)examples/${name}`));
  assert.ok(line, `examples/${name}: its header comment gives no "deno run ... examples/${name}"`);
  return line[1].trim().split(" ");
}

for (const [name, lines] of Object.entries(expected)) {
  Deno.test(`examples/${name} prints what it shows and exits 0 by itself`, async () => {
    const flags = await headerFlags(name);
    // Killed at the bound (each runs in well under a second): one that does not exit by itself
    // fails here instead of hanging the suite.
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", ...flags, `examples/${name}`],
      env: { NO_COLOR: "1" },
      cwd: root,
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(60_000),
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, `exit code ${out.code} (signal ${out.signal}); stderr:\n${stderr}`);
    assert.deepEqual(new TextDecoder().decode(out.stdout).split("\n"), [...lines, ""]);
    assert.equal(stderr, "");
  });
}

Deno.test("every example in examples/ is run here and listed in README's Examples", async () => {
  const files: string[] = [];
  for await (const e of Deno.readDir(`${root}examples`)) {
    if (e.isFile && e.name.endsWith(".ts") && e.name !== "demo.ts") files.push(e.name);
  }
  assert.deepEqual(files.sort(), Object.keys(expected).sort());
  const readme = await Deno.readTextFile(`${root}README.md`);
  const section = readme.slice(
    readme.indexOf("\n## Examples\n"),
    readme.indexOf("\n## Permissions"),
  );
  assert.ok(
    section.startsWith("\n## Examples\n"),
    "README has an Examples section before Permissions",
  );
  for (const name of files) {
    assert.match(section, new RegExp(`\\[\`${name}\`\\]\\(examples/${name}\\)`));
  }
});

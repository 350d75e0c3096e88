// The suite runs every test file in one process (scripts/test.sh), each file's tests in the
// order they are registered. A file that starts the native scheduler ends with a test that
// shuts it down (tests/support.ts, shutdownScheduler, says why); a test registered after it
// started a scheduler again that the files after it met, and found it stopped meanwhile.
import assert from "node:assert/strict";

const dir = new URL("./", import.meta.url).pathname;
// In two parts: else this file's own line would read as such a test.
const LAST = "Deno." + 'test("the scheduler this file may have started is shut down"';

Deno.test("a test file's scheduler shutdown is its last test", async () => {
  const files: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.isFile && e.name.endsWith("_test.ts")) files.push(e.name);
  }
  const ending = [];
  for (const name of files.sort()) {
    const src = await Deno.readTextFile(`${dir}${name}`);
    const at = src.indexOf(LAST);
    if (at === -1) continue;
    ending.push(name);
    assert.equal(src.indexOf(LAST, at + 1), -1, `${name} shuts the scheduler down twice`);
    const after = src.slice(at + LAST.length).match(/Deno\.test\s*\(/g)?.length ?? 0;
    assert.equal(after, 0, `${name}: ${after} test(s) registered after its scheduler shutdown`);
  }
  assert.ok(ending.length >= 5, `the files that end with the shutdown: ${ending}`);
});

// The suite runs every test file in one process (scripts/test.sh), each file's tests in the
// order they are registered. A file that starts the native scheduler ends with a test that
// shuts it down (tests/support.ts, shutdownScheduler, says why); a test registered after it
// started a scheduler again that the files after it met, and found it stopped meanwhile. A file
// that starts one and does not end so left it running for the next file: with one worker per
// CPU, where a later file's `runtime({ workers: 2 })` is a RangeError on every machine whose
// CPU count is not 2 (option_names_test.ts's then failed runtime_test.ts's first test).
import assert from "node:assert/strict";

const dir = new URL("./", import.meta.url).pathname;
// In two parts: else this file's own line would read as such a test.
const LAST = "Deno." + 'test("the scheduler this file may have started is shut down"';
/**
 * What starts the scheduler: `runtime()`, and `NativeScope.create()` / `nativeScope(scope)`,
 * which call it (src/native_scope.ts). Read from a file's own imports (of `../mod.ts` or
 * `../src/...`), not from the scripts it runs in a child process, which import `./mod.ts`.
 */
const STARTERS = new Set(["runtime", "NativeScope", "nativeScope"]);

/**
 * The names `src` imports (not as types only) from the library's own modules, and those it
 * reads off a namespace import of them (`import * as kc`: `kc.runtime`).
 */
function libraryImports(src: string): string[] {
  const names = [];
  for (const m of src.matchAll(/import\s*(type\s*)?\{([^}]*)\}\s*from\s*"\.\.\/[^"]*"/g)) {
    if (m[1] !== undefined) continue;
    for (const part of m[2].split(",")) {
      const name = part.trim().split(/\s+as\s+/)[0];
      if (name !== "" && !name.startsWith("type ")) names.push(name);
    }
  }
  for (const m of src.matchAll(/import\s*\*\s*as\s+(\w+)\s+from\s*"\.\.\/[^"]*"/g)) {
    for (const use of src.matchAll(new RegExp(`\\b${m[1]}\\.(\\w+)`, "g"))) names.push(use[1]);
  }
  return names;
}

Deno.test("a test file's scheduler shutdown is its last test", async () => {
  const files: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.isFile && e.name.endsWith("_test.ts")) files.push(e.name);
  }
  const ending = [], starting = [];
  for (const name of files.sort()) {
    const src = await Deno.readTextFile(`${dir}${name}`);
    const at = src.indexOf(LAST);
    const starts = libraryImports(src).filter((n) => STARTERS.has(n));
    if (starts.length > 0) starting.push(name);
    const why = `${name} imports ${starts.join(", ")}, which start the scheduler`;
    assert.ok(at !== -1 || starts.length === 0, `${why}, and does not end with its shutdown`);
    if (at === -1) continue;
    ending.push(name);
    assert.equal(src.indexOf(LAST, at + 1), -1, `${name} shuts the scheduler down twice`);
    const after = src.slice(at + LAST.length).match(/Deno\.test\s*\(/g)?.length ?? 0;
    assert.equal(after, 0, `${name}: ${after} test(s) registered after its scheduler shutdown`);
  }
  assert.ok(ending.length >= 5, `the files that end with the shutdown: ${ending}`);
  // The import reading finds what it is for (a regex that matched nothing would pass above).
  assert.ok(starting.includes("runtime_test.ts"), `the files that start it: ${starting}`);
});

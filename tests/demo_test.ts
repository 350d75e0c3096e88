import assert from "node:assert/strict";

Deno.test("the demo runs to completion and exits 0", async () => {
  const res = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-ffi", "--allow-read", "--allow-env", "examples/demo.ts"],
    cwd: new URL("../", import.meta.url).pathname,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const out = new TextDecoder().decode(res.stdout);
  assert.equal(res.code, 0, new TextDecoder().decode(res.stderr));
  assert.match(out, /tick 8: B:done/);
  assert.match(out, /unpark before the first park -> left a permit/);
  assert.match(out, /InvalidHandleError/);
  assert.match(out, /stats: 0 live coroutines/);
  assert.match(out, /= 499,999,500,000 in/);
  assert.match(out, /1,000 done/);
  assert.match(out, /16 CPU-bound coroutines on 2 workers: 16 done/);
  assert.match(out, /2,000 values, sum 1,999,000/);
  // Every count has thousands separators, the workers' too (they printed 637055).
  assert.match(out, /workers: #0 ran [\d,]+, stole [\d,]+, parked [\d,]+; #1 ran/);
  assert.match(out, /#\d ran \d{1,3}(,\d{3})+/); // a million runs over two workers
  // Times aside (a loaded machine takes 1000 ms and more) and the first line's library path.
  const counts = out.split("\n").slice(1).join("\n").replace(/\d+(\.\d+)? [mn]s\b/g, "");
  assert.doesNotMatch(counts, /\d{4}/, "a count of four digits or more without separators");
  assert.match(out, /select over two producers: fast won/);
  assert.match(out, /native 60 s sleep: null after \d+ ms; the native sleeper ended with KC_EINTR/);
});

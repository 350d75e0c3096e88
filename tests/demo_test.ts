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
  assert.match(out, /= 499999500000 in/);
  assert.match(out, /1000 done/);
  assert.match(out, /16 CPU-bound coroutines on 2 workers: 16 done/);
  assert.match(out, /2,000 values, sum 1999000/);
  assert.match(out, /select over two producers: fast won/);
  assert.match(out, /native 60 s sleep: null after \d+ ms; the native sleeper ended with KC_EINTR/);
});

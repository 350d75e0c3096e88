// The native channel's C ABI, driven raw through the symbol table: wrong sizes, flags and
// handles are status codes, never a crash (the TypeScript Channel class comes with issue 5).
import assert from "node:assert/strict";
import { library, Status } from "../mod.ts";

const TRY = 1;

Deno.test("channel C ABI from Deno: try-operations, bad input, destroy", () => {
  const sym = library().symbols("test");
  const out = new Uint32Array(1);
  assert.equal(sym.kc_chan_create(8, 4, 0, 0, out), 0);
  const h = out[0];
  const v = new BigUint64Array([42n]);
  const r = new BigUint64Array(1);
  assert.equal(sym.kc_chan_send(h, v, 8, 0n, 0, TRY), 0);
  assert.equal(sym.kc_chan_recv(h, r, 8, 0n, 0, TRY), 0);
  assert.equal(r[0], 42n);
  assert.equal(sym.kc_chan_recv(h, r, 8, 0n, 0, TRY), Status.EAGAIN);
  // A buffer smaller than the element: refused, nothing read or written past it.
  assert.equal(sym.kc_chan_send(h, new Uint8Array(3), 3, 0n, 0, TRY), Status.EINVAL);
  assert.equal(sym.kc_chan_recv(h, new Uint8Array(16), 16, 0n, 0, TRY), Status.EINVAL);
  assert.equal(sym.kc_chan_send(h, v, 8, 0n, 0, 0xff), Status.EINVAL);
  const snap = new BigUint64Array(13);
  assert.equal(sym.kc_chan_snapshot(h, snap, 13), 13);
  assert.equal(snap[0], 1n);
  assert.equal(snap[1], 1n);
  assert.equal(sym.kc_chan_close(h), 1);
  assert.equal(sym.kc_chan_close(h), 0);
  assert.equal(sym.kc_chan_send(h, v, 8, 0n, 0, TRY), Status.EPIPE);
  assert.equal(sym.kc_chan_destroy(h), 0);
  for (const forged of [h, 0, 0xffffffff, h ^ 1]) {
    assert.equal(sym.kc_chan_send(forged, v, 8, 0n, 0, TRY), Status.EBADH);
    assert.equal(sym.kc_chan_destroy(forged), Status.EBADH);
  }
  assert.equal(sym.kc_chan_create(0, 0, 0, 0, out), Status.EINVAL);
  assert.equal(sym.kc_chan_create(8, 0, 7, 0, out), Status.EINVAL);
});

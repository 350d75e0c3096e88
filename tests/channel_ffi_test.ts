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

Deno.test("bridge: a JS receive waits on the ring without blocking the event loop", async () => {
  const sym = library().symbols("test");
  const out = new Uint32Array(1);
  assert.equal(sym.kc_chan_create(8, 0, 0, 0, out), 0);
  const h = out[0];
  assert.equal(sym.kc_ring_create(out), 0);
  const ring = out[0];
  const value = new BigUint64Array(1);
  const ticket = new Uint32Array(1);
  // Nobody sends yet: queued.
  assert.equal(sym.kc_chan_recv_async(h, value, 8, ring, ticket), 1);
  const waiting = sym.kc_ring_wait(ring, 10_000_000_000n); // runs off the JS thread
  // A sender (this thread, non-blocking: the receiver waits) completes it.
  assert.equal(sym.kc_chan_send(h, new BigUint64Array([77n]), 8, 0n, 0, TRY), 0);
  assert.equal(await waiting, 1);
  const records = new Uint32Array(8);
  assert.equal(sym.kc_ring_drain(ring, records, 2), 1);
  assert.equal(records[0], ticket[0]);
  assert.equal(records[1], 0); // status
  assert.equal(sym.kc_ring_take(ring, ticket[0], value, 8), 0);
  assert.equal(value[0], 77n);
  assert.equal(sym.kc_ring_take(ring, ticket[0], value, 8), Status.EBADH); // taken once
  // An aborted receive: withdrawn, so a later try-send finds nobody.
  assert.equal(sym.kc_chan_recv_async(h, value, 8, ring, ticket), 1);
  assert.equal(sym.kc_ring_abort(ring, ticket[0]), 0);
  assert.equal(sym.kc_chan_send(h, new BigUint64Array([1n]), 8, 0n, 0, TRY), Status.EAGAIN);
  // Close settles a pending receive with KC_EPIPE through the ring.
  assert.equal(sym.kc_chan_recv_async(h, value, 8, ring, ticket), 1);
  assert.equal(sym.kc_chan_close(h), 1);
  assert.equal(await sym.kc_ring_wait(ring, 10_000_000_000n), 1);
  assert.equal(sym.kc_ring_drain(ring, records, 2), 1);
  assert.equal(new Int32Array(records.buffer)[1], Status.EPIPE);
  assert.equal(sym.kc_ring_take(ring, ticket[0], null, 0), 0);
  // Destroy wakes a blocked wait (0: no record).
  const blocked = sym.kc_ring_wait(ring, 0n);
  assert.equal(sym.kc_ring_destroy(ring), 0);
  assert.equal(await blocked, 0);
  assert.equal(sym.kc_ring_drain(ring, records, 2), Status.EBADH);
  assert.equal(sym.kc_chan_destroy(h), 0);
});

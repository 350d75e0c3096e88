/**
 * Waiting without blocking the event loop: the isolate's completion ring (`kc_ring_*`).
 *
 * A channel operation that cannot complete at once first waits in JavaScript until the end of
 * its turn of the event loop (`defer`: a same-isolate partner usually takes it over before
 * then), and is then queued natively with a ticket (`kc_chan_send_async` /
 * `kc_chan_recv_async`). Whoever completes it (a native coroutine, a
 * thread, another isolate, close or cancel) appends a record to this isolate's ring. The isolate
 * keeps at most one `kc_ring_wait` outstanding (a nonblocking FFI call, run off the JS thread),
 * and only while some operation is pending that something outside this isolate's JavaScript may
 * complete, so idle channels never keep the process alive; each wake-up drains every ready record
 * and settles each ticket's operation. An operation only this isolate's own native calls can
 * complete (`RingOp.inside`: a select on channels that never left its JavaScript) keeps nothing
 * outstanding, as a wait on a local channel does not: its record lands in the ring during such a
 * call, and is drained in a microtask after it (`touch`).
 *
 * Internal: {@linkcode Channel} is the public face.
 *
 * @module
 */
import { setImmediate } from "node:timers";
import { beforeClose, isLibraryOpen, type Library, librarySymbols, onClose } from "../ffi/load.ts";
import type { Slot } from "./codec.ts";
import { InvalidHandleError, KcoroError, reportUncaught, Status, statusError } from "./errors.ts";

/**
 * A queued operation: `complete` runs once its record is drained (it must `take` the ticket);
 * `index` is the clause that fired for a select (0 for a plain operation).
 */
export interface RingOp {
  ticket: number;
  complete(status: number, index: number): void;
  /**
   * Its native wait was withdrawn (`kc_ring_abort`) because the library is closing: no record
   * will come. Fail with a LibraryClosedError, giving back what it holds natively (the library
   * is still open) and a send's value to the channel's `onUndeliveredElement`.
   */
  withdrawn(): void;
  /**
   * Its ring is gone while the library is open (destroyed by hand, as a test does: a ring goes
   * with its library's close otherwise, which withdraws every wait first): no record will come,
   * so it fails now with `status`'s named error (KC_EBADH: an InvalidHandleError). A close watch
   * tells what it can still learn (its channel's status) and watches no more.
   */
  lost?(status: number): void;
  /**
   * True while only this isolate's own native calls can complete it: every channel it waits on
   * is native but never left this isolate's JavaScript (no `handle` read, no `share()`, no
   * `Channel.from` copy: a `select` made it native). Such an operation keeps no `kc_ring_wait`
   * outstanding (a program whose only pending work is one ends, as with a wait on a local
   * channel); its record is drained after the call that wrote it (`touch`). Absent: false.
   * Asked as it is tracked, and again when a channel goes outside (`reconsider`).
   */
  inside?(): boolean;
  /**
   * Set by the bridge: it is counted as one that keeps the ring wait outstanding (`#alive`).
   */
  keepsAlive?: boolean;
  /**
   * A close watch queued with `owned` (KC_WATCH_OWNED): left queued by `#closing`, so that the
   * ring's destroy at the close cancels its channel (the isolate that fed it can feed it no
   * more); `withdrawn` is called after that destroy.
   */
  owned?: boolean;
  /**
   * Given up after it completed natively, its record not drained yet: the record settles it as
   * given up (a value it took goes back to its channel).
   */
  gaveUp?: boolean;
  /**
   * The per-isolate state (`sharedStateOf`, src/channel.ts) of the channel its record's clause
   * `index` is on (a plain operation's own channel), for `settleWhere`'s picks; undefined where
   * none is.
   */
  channelAt?(index: number): unknown;
  /**
   * Whether its record's clause `index` sends (false: receives), for `settleWhere`'s picks and
   * the kind of held list its record goes in (`Bridge.#heldSends`): a plain operation's own kind,
   * a select's clause's; undefined past a select's last channel clause. Absent on close watches.
   */
  sendsAt?(index: number): boolean | undefined;
}

/**
 * The error a queued wait fails with once its ring is gone (`RingOp.lost`, or its withdrawal
 * failing with `status`): KC_EBADH names the ring's handle, not the channel's, which may live
 * on (another isolate's waits on it still complete). Before, it was `unwrap`'s message for a
 * dead handle, "the handle is stale, destroyed or not a kcoro handle", which sent the reader
 * looking for a channel destroyed, when the ring was. Another status keeps its named error.
 * `gaveUp`: found by the withdrawal of a wait that gave up (its signal aborted, its copy
 * disposed, a select's JavaScript clause won), which the message says; `op` is the call's own
 * name either way. Before, such a withdrawal was named as the operation ("Cannot withdraw
 * iterate channel"), and a withdrawal this isolate made itself read so too, though the same
 * loss found by a drain read "Cannot receive". The status received is its number: KcoroError
 * appends its name (it read "received KC_EBADH from the ring (KC_EBADH)").
 */
export function ringLostError(status: number, op: string, gaveUp = false): unknown {
  if (status !== Status.EBADH) return statusError(status, op);
  return new InvalidHandleError(
    `Cannot ${op}: the wait was lost with this isolate's completion ring, destroyed while the ` +
      `wait was queued on it${gaveUp ? ", so giving it up could not withdraw it" : ""} (no ` +
      "completion can come; the channel itself was not destroyed by this), received " +
      `${status} from the ring`,
  );
}

/** How long one wait may block before the loop looks again (bounds exit after a lost wake-up). */
const WAIT_NS = 250_000_000n;
const BATCH = 64;
/**
 * While close watches are queued and no wait is outstanding, the ring is looked at this often
 * (an unref'd timer: a watch keeps no isolate alive). A wait outstanding for an operation
 * drains a watch's record at once.
 */
const WATCH_POLL_MS = 20;
/**
 * A cell nobody writes or wakes: `Atomics.wait` on it (value 0) is a sleep of the JS thread for
 * its timeout, `#closing`'s back-off while it waits for records another thread is pushing.
 */
const NAP = new Int32Array(new SharedArrayBuffer(4));
/**
 * How long a library's close waits in all (ms), over all its looks, for the records of the
 * withdrawals that answered "busy" (`#awaitRecords`): one second at each look, two in all.
 */
const CLOSE_WAIT_MS = 2000;

type Sym = ReturnType<Library["symbols"]>;

/**
 * The records of one kind held on one channel (`Bridge.#heldSends`, `#heldReceives`): a pick of
 * one kind (`settleWhere`'s `sends`) walks its own. Before, one list of both: each of m picks of
 * one kind (a send's of the receive records it completed) walked n held records of the other
 * kind, never taken and kept: n × m steps.
 */
class HeldOn {
  /** Their places in `#held` (a triple's first number), oldest first; some no longer live. */
  readonly places: number[];
  /** How many of `places` are live (neither taken nor settled): the entry goes at 0. */
  live = 1;
  /** `at`: the channel; `sends`: the kind (`RingOp.sendsAt`); `first`: the first place. */
  constructor(readonly at: unknown, readonly sends: boolean, first: number) {
    this.places = [first];
  }
}

/** One isolate's completion ring over one open library. */
export class Bridge {
  readonly #lib: Library;
  readonly #sym: Sym;
  readonly #ring: number;
  readonly #ops = new Map<number, RingOp>();
  /**
   * The operations of `#ops` that something outside this isolate's JavaScript may complete
   * (`RingOp.keepsAlive`): a `kc_ring_wait` is outstanding only while one is pending. The others
   * (`RingOp.inside`) are completed by this isolate's own native calls, whose records `touch`
   * drains. Before, every pending operation kept the wait outstanding: a select on local
   * channels that nothing would complete (and any later wait on them) kept the process alive.
   */
  #alive = 0;
  /** `#drainInside` is queued (`touch`). */
  #touchDue = false;
  /**
   * A value went back to its channel (`giveBack`) since `#drainRecords` last drained the ring:
   * it may have completed a wait of this isolate, whose record that drain then settles too.
   * Read only after a batch shorter than `BATCH`; a drain's first pass drains the ring whatever
   * this says and clears it, so one set outside a drain (a `settleWhere`'s settle, `#closed`'s)
   * costs no later drain a call.
   */
  #gaveBack = false;
  /** How many values went back (`giveBack`): `settleWhere` tells its settles' give-backs so. */
  #givenBack = 0;
  /**
   * Close watches queued (`kc_ring_watch`): settled by their records as `#ops` are, but not
   * counted as pending (`pending`, `#loop`): an isolate whose channels are idle exits with a
   * watch queued, since no `kc_ring_wait` stays outstanding for one. Their records are drained
   * by a wait outstanding for an operation, else by an unref'd timer (`#pollWatches`).
   */
  readonly #watches = new Map<number, RingOp>();
  /** The timer of `#pollWatches`, while it runs. */
  #poll: ReturnType<typeof setInterval> | null = null;
  readonly #records = new Uint32Array(4 * BATCH);
  readonly #statuses = new Int32Array(this.#records.buffer);
  readonly #out = new Uint32Array(1);
  /** `#out` by address (pinned): the queued operation's ticket. */
  readonly #outPtr = Deno.UnsafePointer.of(this.#out);
  #waiting = false;
  /** `#closed` destroyed the ring: no call names its handle any more (`take`, `giveBack`). */
  #destroyed = false;
  /**
   * A drain of the ring failed (negative status: the ring is gone, destroyed by hand, as a test
   * does): `#closed` then makes no `kc_ring_destroy` of its own. Set by drains only: a failed
   * `kc_ring_wait` (`#loop`) sets it through `#ringGone`'s drain, which then fails too. Before,
   * `#closed` destroyed the gone ring again (KC_EBADH, ignored).
   */
  #gone = false;

  private constructor(lib: Library) {
    this.#lib = lib;
    this.#sym = librarySymbols(lib, "create completion ring");
    const rc = this.#sym.kc_ring_create(this.#out);
    // A named error with the status's name (KC_ENOMEM: out of memory or ring slots), not a bare
    // Error saying "status N".
    if (rc !== 0) throw new KcoroError(rc, "Cannot create completion ring");
    this.#ring = this.#out[0];
    beforeClose(lib, () => this.#closing(), "the withdrawal of the ring's waits");
    onClose(lib, () => this.#closed());
  }

  /**
   * The library is about to close: each queued operation is withdrawn natively and fails with a
   * LibraryClosedError, except those that completed first, whose records settle them as
   * completed. Before, they were settled only after the close, when nothing could be withdrawn
   * any more: a receive reported failed still took its value, lost; a send reported failed was
   * still delivered.
   */
  #closing(): void {
    // One batch (`due`), as `#start`'s flushes and a drain's records are: the hooks for the
    // values of the sends it refuses as it queues them run once it has settled them all.
    const began = this.beginDue();
    try {
      this.#closeBatch();
    } finally {
      if (began) this.#runDue();
    }
  }

  /** What `#closing` does, as one batch (`due`). */
  #closeBatch(): void {
    this.#closePassed = true;
    // Records a `settleWhere` (whose settle ran this close) picked: settled first, while the
    // library is open, as completed before the withdrawals below fail the newer waits. Reached
    // where a picked record's settle runs user code that closes the library: a receive's on a
    // drop-policy channel collects what native code dropped there, its onUndeliveredElement
    // hook run at once (no batch: `Channel.#collectSettled`). Without this, the later picks
    // settled after the withdrawals, at `#awaitRecords`' drain (channel_test "closing the
    // library from a hook that a send's settle of its picked records ran").
    this.#complete();
    // Waits still due to be queued at the end of this turn: queued now, while the library is
    // open, so that they are withdrawn and failed the same way (they went to the closed
    // library afterwards, failing with InvalidHandleError and losing a send's value).
    const deferred = this.#deferred;
    this.#deferred = [];
    for (const op of deferred) {
      try {
        op.flush();
      } catch (e) {
        reportUncaught(e);
      }
    }
    const busy: number[] = [];
    // Operations, then close watches: each withdrawn, or left to its record.
    for (const map of [this.#ops, this.#watches]) {
      for (const op of [...map.values()]) {
        // Settled since the list was taken: a hook that an earlier withdrawal ran (a send's
        // onUndeliveredElement) took it over in this isolate (a tryReceive from its channel,
        // whose `#takeFromSender` withdrew it and took its value). Before, its stale ticket made
        // this abort fail (KC_EBADH) and it was withdrawn again: a send's slot, given back
        // already, was read (a TypeError reported, which ends a process with no "error" listener).
        if (map.get(op.ticket) !== op) continue;
        if (op.owned) continue; // for the ring's destroy to cancel its channel (`#closed`)
        if (this.#sym.kc_ring_abort(this.#ring, op.ticket) === Status.EBUSY) {
          busy.push(op.ticket);
          continue;
        }
        map.delete(op.ticket);
        this.#forget(op);
        try {
          op.withdrawn();
        } catch (e) {
          reportUncaught(e);
        }
      }
    }
    this.#stopPoll();
    try {
      // An abort that answered "busy" lost to a completion whose record may not be on the ring
      // yet (its completer is between unlocking the channel and pushing it, a bounded window):
      // wait for those records, or `#closed` would fail operations that took effect (a send
      // delivered and also handed to onUndeliveredElement): `#awaitRecords`, which stops where
      // the ring is gone and yields the CPU between its looks.
      this.#awaitRecords(busy, () => this.#drain());
    } catch (e) {
      reportUncaught(e);
    }
    // The ring itself lives on until the library is closed (`#closed`): code that runs after
    // this, while the library is still open (a close hook after this one, an "error" listener
    // a hook's reportError calls), may queue a wait. On a destroyed ring that said KC_EBADH,
    // which a Channel.from copy took for its channel destroyed by its creator: a live channel
    // marked ended, its hold never given back and its owner's dispose no longer destroying it.
  }

  /**
   * The library was closed: the ring goes with it (a ring dies with its thread otherwise, and
   * the main thread never ends: each closeLibrary/openLibrary cycle left one behind, until the
   * ring table was full); destroying it withdraws what is still queued on it (waits queued
   * after `#closing`) and makes a `kc_ring_wait` outstanding return (`#loop` then stops). No
   * record will come for what is queued, so each queued operation is completed now (each
   * rejects, seeing the library closed) instead of waiting for ever.
   */
  #closed(): void {
    // One batch (`due`), as `#closing`'s: the hooks for the values its settles leave in their
    // channels' dropped lists (a send a cancel failed, a give-back refused, a send cut off by the
    // destroy) run once every operation it settles has settled, as open. Before, no batch: those
    // values waited natively for their channel's dispose.
    const began = this.beginDue();
    try {
      this.#closedBatch();
    } finally {
      if (began) this.#runDue();
    }
  }

  /** What `#closed` does, as one batch (`due`). */
  #closedBatch(): void {
    // Records `settleWhere` held after the last `#closing` drained the ring (a close hook of the
    // last round a close runs, past which another `#closing` is not run: see `settleWhere`):
    // settled first, once each, in order, as that drain would have settled them (a close
    // watch's, told what it watched for; an operation's, as its record says: see below), and
    // the held list cleared. Before, they were neither settled nor
    // cleared: a watch whose record was held was only withdrawn, its channel's cancel never told.
    // Then the records still on the ring, drained now: the ring lives until its destroy below,
    // and the raw symbols outlive the close (`symbolsToReleaseOf`: `#sym` is those).
    // Those of waits begun after the last `#closing` (by a close hook of the last round), and
    // those whose abort answered "busy" there but whose record landed after its deadline. Each
    // settles as its record says (`RingOp.complete` with the library closed: a delivered send
    // resolves, a wait given up rejects with its reason), before the destroy, so that a value
    // taken or given back goes through its ticket once. Before, they were left on the ring and
    // failed below as cut off: a send delivered reported failed (its caller retrying sent the
    // value twice), a receive given up rejected with LibraryClosedError, not its reason.
    const held = this.#held, head = this.#heldHead;
    this.#held = [];
    this.#heldIn = [];
    this.#heldHead = 0;
    this.#heldLive = 0;
    this.#heldSends.clear();
    this.#heldReceives.clear();
    // Those taken already (ticket 0) are skipped by `#settle`.
    for (let i = head; i < held.length; i += 3) this.#settle(held[i], held[i + 1], held[i + 2]);
    this.#drainClosed();
    // Then what is still queued is withdrawn, as `#closing` withdraws it: failed with a
    // LibraryClosedError (a send's value to onUndeliveredElement), or, where its withdrawal
    // answers "busy" (it completed since that look, or before, its record late), waited for as
    // `#closing` waits (bounded) and settled as its record says. Before, the ring was destroyed
    // after that one look: a wait that completed natively between the look and the destroy
    // (one a close hook of the last round began, or one past `#closing`'s deadline) was failed
    // as cut off, a send its receiver had reported failed.
    const busy: number[] = [];
    for (const op of [...this.#ops.values()]) {
      // Settled meanwhile: a withdrawal above runs user code (a send's value to its
      // onUndeliveredElement hook, at once: `Channel.#failClosed`), which may give up another
      // wait (its signal aborted: `abort` withdraws it natively, the ring still alive). Its
      // ticket is then freed: the abort below would answer KC_EBADH and `rc !== 0` skip it all
      // the same, so this saves a native call on a stale ticket, and never names a slot given to
      // another wait since (12-bit generations). Unlike `#closeBatch`'s same check, not needed
      // for correctness.
      if (this.#ops.get(op.ticket) !== op) continue;
      const rc = this.#sym.kc_ring_abort(this.#ring, op.ticket);
      if (rc === Status.EBUSY) busy.push(op.ticket);
      if (rc !== 0) continue; // busy: its record settles it; failed (the ring gone): cut off below
      this.#ops.delete(op.ticket);
      this.#forget(op);
      try {
        op.withdrawn();
      } catch (e) {
        reportUncaught(e);
      }
    }
    this.#awaitRecords(busy, () => this.#drainClosed());
    // Not where a drain found the ring gone (`#gone`: `#drainClosed` above drained it at least
    // once, so a destroy by hand is known here).
    if (!this.#gone) this.#sym.kc_ring_destroy(this.#ring);
    this.#destroyed = true;
    // A watch is told nothing more: its channel did not end, its library did (an owned one's
    // channel was cancelled by the destroy: the producer that fed it can feed it no more).
    const watches = [...this.#watches.values()];
    this.#watches.clear();
    this.#stopPoll();
    for (const op of watches) {
      try {
        op.withdrawn();
      } catch (e) {
        reportUncaught(e);
      }
    }
    const ops = [...this.#ops.values()];
    this.#ops.clear();
    this.#alive = 0;
    for (const op of ops) {
      op.keepsAlive = false;
      try {
        op.complete(Status.ECANCELED, 0);
      } catch (e) {
        reportUncaught(e);
      }
    }
  }

  /**
   * Waits for the records of the operations `busy` names (tickets whose withdrawal answered
   * "busy": completed, each record on the ring or about to be, its completer between unlocking
   * the channel and pushing it, a bounded window), `drain` settling what has come, for at most
   * a second, and no longer than what is left of the close's budget (`#waitLeft`). Not where
   * the ring is gone (`drain` failed: destroyed by hand, as a test does, or by code a settle
   * ran): no record can come any more. Between looks the thread yields, for slices that grow
   * to 1 ms (`Atomics.wait` on a cell nobody wakes: a sleep that blocks this thread only), so
   * that the completer it waits for gets the CPU. Before, `#closing` drained a gone ring for
   * the whole second, and spun a CPU hot against that completer (on a loaded host, on its CPU).
   * The budget counts only this wait: time the close hooks take between its looks is not
   * charged to it (a record may land meanwhile, found by the next look's first drain).
   */
  #awaitRecords(busy: number[], drain: () => number): void {
    // One budget for the whole close (`#waitLeft`): each look waits a second at most, and all of
    // them together `CLOSE_WAIT_MS`. Before, each look had a second of its own: a record that
    // never landed held the close a second more for each later round of close hooks that began
    // a wait (up to 1,000 rounds: a quarter of an hour).
    const start = performance.now();
    const deadline = start + Math.min(1000, this.#waitLeft);
    try {
      for (let slice = 0.05;; slice = Math.min(2 * slice, 1)) {
        if (drain() < 0) return;
        if (!busy.some((t) => this.#ops.has(t) || this.#watches.has(t))) return;
        if (performance.now() >= deadline) return;
        Atomics.wait(NAP, 0, 0, slice);
      }
    } finally {
      this.#waitLeft = Math.max(0, this.#waitLeft - (performance.now() - start));
    }
  }

  /**
   * `#drain` once the library is closed (`#closed`, before the ring's destroy: the raw symbols
   * outlive the close), where `#drain` drains nothing: settles every record on the ring, in
   * order. Negative where the ring's drain failed (the ring gone), else 0.
   */
  #drainClosed(): number {
    for (;;) {
      const n = this.#sym.kc_ring_drain(this.#ring, this.#early, BATCH);
      if (n < 0) this.#gone = true;
      if (n <= 0) return n;
      // Copied out: a settle's code may drain into `#early` again (`giveBack`'s check).
      const records = this.#early.slice(0, 4 * n), statuses = new Int32Array(records.buffer);
      for (let i = 0; i < n; i++) {
        this.#settle(records[4 * i], statuses[4 * i + 1], records[4 * i + 2]);
      }
    }
  }

  static #bridges = new WeakMap<Library, Bridge>();

  /** This isolate's bridge for `lib` if one was made (`of`), else undefined. */
  static existing(lib: Library): Bridge | undefined {
    return Bridge.#bridges.get(lib);
  }

  /** This isolate's bridge for `lib`, created on first use. */
  static of(lib: Library): Bridge {
    let b = Bridge.#bridges.get(lib);
    if (b === undefined) {
      b = new Bridge(lib);
      Bridge.#bridges.set(lib, b);
    }
    return b;
  }

  /** Operations queued and not yet settled. */
  get pending(): number {
    return this.#ops.size;
  }

  /** Of `pending`, those that keep the ring wait outstanding (not `RingOp.inside`). */
  get pendingOutside(): number {
    return this.#alive;
  }

  /** True while a `kc_ring_wait` is outstanding. */
  get waiting(): boolean {
    return this.#waiting;
  }

  /**
   * The ring was destroyed by the library's close (`#closed`): an operation settled now was cut
   * off (no record came), and nothing may be taken from the ring any more.
   */
  get destroyed(): boolean {
    return this.#destroyed;
  }

  /** The ring's handle (for `kc_select_async`). */
  get ring(): number {
    return this.#ring;
  }

  /**
   * `kc_chan_send_async` (`recv` false) or `kc_chan_recv_async`: 0 done now (a receive's value
   * is in `slot`), 1 queued (`ticket` is set: pass it to `track`), or a negative status.
   */
  submit(recv: boolean, handle: number, slot: Slot, size: number): number {
    return recv
      ? this.#sym.kc_chan_recv_async_at(handle, slot.ptr, size, this.#ring, this.#outPtr)
      : this.#sym.kc_chan_send_async_at(handle, slot.ptr, size, this.#ring, this.#outPtr);
  }

  /**
   * `kc_ring_watch`: a close watch on channel `handle` (told of a cancel only, with
   * `cancelOnly`; the ring's going away with it queued cancels the channel, with `owned`,
   * KC_WATCH_OWNED): 1 queued (`ticket` is set: pass it to `trackWatch`), KC_EPIPE /
   * KC_ECANCELED when the channel has ended so already, or another negative status (KC_EBADH:
   * gone).
   */
  watch(handle: number, cancelOnly: boolean, owned = false): number {
    const flags = (cancelOnly ? 1 : 0) | (owned ? 2 : 0);
    return this.#sym.kc_ring_watch(this.#ring, handle, flags, this.#out);
  }

  /**
   * Starts watching a queued close watch: its record settles `op` (`complete`, which must
   * `take` it). It keeps nothing outstanding that holds the isolate alive (`#watches`).
   */
  trackWatch(op: RingOp): void {
    this.#watches.set(op.ticket, op);
    if (this.#closePassed) this.#closeAgain();
    this.#pollWatches();
  }

  /**
   * Withdraws a close watch (`kc_ring_abort`): no record will come. When its record came first
   * (KC_EBUSY), it stays tracked: the record settles it (its `complete` takes it), as an
   * operation's does, and the answer is true (what it watched for happened before the
   * withdrawal, not yet drained); else false.
   */
  unwatch(op: RingOp): boolean {
    if (this.#watches.get(op.ticket) !== op) return false;
    // No native call once the library is closed, though the ring lives until `#closed` destroys
    // it (user code runs in between: an onUndeliveredElement hook given a withdrawn send's value,
    // which may end a task or dispose of a mailbox, giving its watch up). Not as `abort` (native
    // until the ring is destroyed): every watch is owned (`produce`, `actor`), and an owned watch
    // still queued at the destroy cancels its channel, as the library's close must (`#closing`
    // leaves it queued for that): this isolate's close or cancel of it can no longer reach it.
    // Withdrawn there (`abort`'s rule), the channel would stay open for the other isolates'
    // copies, a consumer waiting for ever (channel_test "an owned close watch given up by code
    // that runs after the library closed"). The answer is then false, also where a cancel's
    // record is on the ring, not drained.
    const rc = isLibraryOpen(this.#lib) ? this.#sym.kc_ring_abort(this.#ring, op.ticket) : 0;
    if (rc === Status.EBUSY) return true;
    this.#watches.delete(op.ticket);
    this.#stopPoll();
    return false;
  }

  /**
   * While watches are queued: drains the ring every `WATCH_POLL_MS` when no wait is outstanding
   * (one that is drains their records as it wakes). The timer is unref'd: it runs while the
   * isolate is alive for something else (a timer, a fetch, an operation) and does not keep it
   * alive itself. Not a threadSafe callback from `kc_ring_notify`'s thread: unref'd, a process
   * that exited while that thread was calling it ended with SIGSEGV in a trial.
   */
  #pollWatches(): void {
    if (this.#poll !== null || this.#watches.size === 0) return;
    const id = setInterval(() => {
      if (this.#watches.size > 0 && isLibraryOpen(this.#lib) && !this.#waiting) {
        const rc = this.#drain();
        // The ring is gone (destroyed by hand, as a test does): no record will come. Before,
        // this drained it every WATCH_POLL_MS for as long as the isolate lived, and its
        // watches were never told. The operations too (`#ringGone`, which tells the watches
        // after them): those tracked here are inside ones (no wait is outstanding), whose
        // records only a touch's drain would look for. Before, only the watches were told, and
        // such a wait (a receive on a channel a select made native) waited for ever.
        if (rc < 0 && isLibraryOpen(this.#lib)) this.#ringGone(rc);
      }
      this.#stopPoll();
    }, WATCH_POLL_MS);
    Deno.unrefTimer(id);
    this.#poll = id;
  }

  /** Stops `#pollWatches`'s timer once no watch is left (or the library closed). */
  #stopPoll(): void {
    if (this.#poll === null || (this.#watches.size > 0 && isLibraryOpen(this.#lib))) return;
    clearInterval(this.#poll);
    this.#poll = null;
  }

  /**
   * Drains the ring now and settles the records of the operations `pick` chooses; the others'
   * are held, and settled first by the next `#drain` (at the latest in the next turn of the
   * event loop: the outstanding `kc_ring_wait` finds the ring empty). For a send of this isolate
   * that met its own receive queued natively (`Channel`'s `#handOff`): its native try-send
   * completed the receive on this thread, so the record is there, and the receive settles
   * before the send returns, as a hand-off in JavaScript settles it (no window in which an abort
   * takes the value back from a send that resolved). The other operations settle when they
   * would have: draining them all here let a send on one channel close the abort window of a
   * receive another thread completed on another channel (the model fuzz's seed 55, with the
   * other thread acting mid-turn). So for a close or cancel of this isolate (`Channel`'s
   * `#settleEnded`): the waits of this isolate it failed settle before it returns, as a local
   * channel's close settles them. `pick` is given the record's clause index (a select's); `on` is
   * the channel (`RingOp.channelAt`) of every record `pick` takes: of the records held, only
   * those on it are given to `pick` (every caller's pick is of one channel's records), and of
   * those, with `sends`, only those of its kind (`RingOp.sendsAt`: true, sends; false, receives;
   * undefined, both), oldest first. False if the ring cannot be drained (gone: destroyed by
   * hand, as a test does), the records drained before settled first; true otherwise.
   */
  settleWhere(
    pick: (op: RingOp, index: number) => boolean,
    on: unknown,
    sends?: boolean,
  ): boolean {
    if (!isLibraryOpen(this.#lib)) return true;
    const records = this.#early, statuses = new Int32Array(records.buffer);
    // After those an outer call (whose settle ran this one) picked and did not settle yet.
    const picked = this.#picked;
    // Records an earlier call drained and held (another channel's pick) are older than what the
    // ring holds now: those this pick takes settle now too, first. Before, they waited for the
    // held records' drain, a macrotask later: of two channels' receives completed in one turn,
    // the second channel's send settled its own receive after a newer one (the differential's
    // settle order, seeds 27 and 66). Only those on `on`'s channel, found by its own list of
    // their places (`#heldSends`, `#heldReceives`), oldest first: else a turn's n sends that
    // each settle a receive on one channel, with n records of another channel held, scan them
    // all each time (n² steps; 4000 such sends took 1.1 s, 0.4 s before the scan, 0.12 s with
    // a check of the channels held, on a loaded 2-vCPU host). Before, with a count per channel,
    // it walked the whole held list up to the last record of `on`'s, past every other channel's
    // before it: a turn's sends to k channels, each with a record held, looked at k²/2 entries.
    // A record taken is cleared in place (ticket 0: `#unhold`), not spliced out (each splice
    // moved the rest). Of its kind only (`sends`), by a list per kind: a send's pick of the
    // receives it completed walked the channel's held sends too, which it never takes (n held,
    // m such picks: n × m steps).
    // Older still: the records of the batch a `#drain` (whose settle ran this call: a hook that
    // closes a channel) has not settled yet. Those this pick takes settle now, first; their
    // entries are cleared (ticket 0, which names no operation: `#settle` ignores it), so the
    // drain skips them, and never settles a later operation given the ticket once taken. Before,
    // the close's newer records settled first: a receive the hook's close failed settled before
    // one of that channel that another thread had completed earlier, in the batch.
    for (let i = this.#next; i < this.#count; i++) {
      const ticket = this.#records[4 * i], index = this.#records[4 * i + 2];
      const op = this.#ops.get(ticket);
      if (op === undefined || !pick(op, index)) continue;
      this.#records[4 * i] = 0;
      this.#ops.delete(ticket);
      this.#forget(op);
      picked.push([op, this.#statuses[4 * i + 1], index]);
    }
    // None held: the common case, no lookup.
    if (this.#heldLive > 0) this.#takeHeldOn(pick, on, sends);
    let n: number;
    do {
      n = this.#sym.kc_ring_drain(this.#ring, records, BATCH);
      if (n < 0) {
        // The records drained before (held) settle now, as the ring's own going away settles
        // them first (`#ringGone`): the caller then fails the operations whose records cannot
        // come (`RingOp.lost`), and one whose record is held is not among them. Before, a send
        // whose record a drain here held (completed: its value delivered) failed as lost.
        // Those this call took from the held ones (above) settle first.
        this.#complete();
        this.#drain();
        this.#goneSoon(n);
        return false;
      }
      for (let i = 0; i < n; i++) {
        const ticket = records[4 * i], status = statuses[4 * i + 1], index = records[4 * i + 2];
        const op = this.#ops.get(ticket);
        if (op !== undefined && pick(op, index)) {
          this.#ops.delete(ticket);
          this.#forget(op);
          picked.push([op, status, index]);
        } else this.#hold(ticket, status, index, op);
      }
    } while (n === BATCH);
    // Held while the library closes (by a close hook that runs after `#closing`): `#closing` runs
    // again, so that they settle while the library is open, as the operations begun then do
    // (`#closeAgain`). Before, the scheduled drain below found the library closed, and `#closed`
    // withdrew a close watch whose record was held: a cancel of its channel never told.
    if (this.#heldLive > 0 && this.#closePassed) this.#closeAgain();
    if (this.#heldLive > 0 && !this.#heldDue) {
      this.#heldDue = true;
      setImmediate(() => {
        this.#heldDue = false;
        if (!isLibraryOpen(this.#lib)) return;
        // The ring gone (destroyed by hand, as a test does) after the held records were drained:
        // they settle first, then the rest fail now, as `#drainInside` fails them, and the close
        // watches are told now too, or, while the ring's wait holds the ring, as it returns
        // (`#ringGone`). Before, the failed drain was ignored: they learnt it when the ring's
        // wait or the watches' poll found the ring gone, a turn or more later.
        const rc = this.#drain();
        if (rc < 0 && isLibraryOpen(this.#lib)) this.#ringGone(rc);
        // The held records' operations may have been the last that kept the wait outstanding,
        // which saw none of them (drained here before it looked): as the loop's drain ends it
        // there, this lets it go. Before, it blocked on until its timeout (WAIT_NS), keeping an
        // isolate that had nothing left to wait for alive that long.
        this.#letIdleGo();
      });
    }
    this.#letIdleGo(); // as `abort`
    const gave = this.#givenBack;
    this.#complete();
    // A wait picked here and given up before its settle (a hook that an earlier one's settle ran
    // aborted it: a select's receive clause collects what other isolates' sends dropped) gave
    // its value back (`giveBack`), maybe to a receive of this isolate waiting natively on the
    // channel, which `pick` takes too: its record settles now, before the caller returns, as the
    // drain that gives a value back settles it (`#drainRecords`). Before, it settled at the
    // ring's next wake, and an abort in between (the first one's rejection handler's) rejected
    // it too, the value going back again.
    if (this.#givenBack !== gave) return this.settleWhere(pick, on, sends);
    return true;
  }

  /**
   * `settleWhere` found the ring gone (`status`, with the library open: destroyed by hand, as a
   * test does), and its caller fails its own channel's waits before it returns: the rest learn
   * of it in this turn too, in a microtask after those (`#ringGone`: the other operations fail,
   * the close watches are told what their channels' status says, or, while the ring's wait
   * holds it, as that wait returns: the teardown that may cancel their channels waits for it).
   * Before, they learnt it only when the ring's wait found it gone, or the watches' poll did
   * (`WATCH_POLL_MS`): a turn or more after the caller's waits had failed (16 ms in a trial), and
   * with no wait outstanding and nothing else keeping the isolate alive, a watch's poll (unref'd)
   * might never run.
   */
  #goneSoon(status: number): void {
    if (this.#goneDue) return;
    this.#goneDue = true;
    queueMicrotask(() => {
      this.#goneDue = false;
      if (isLibraryOpen(this.#lib)) this.#ringGone(status);
    });
  }

  /** `#goneSoon`'s microtask is queued. */
  #goneDue = false;

  /**
   * Where nothing keeps the ring wait outstanding any more (`#alive` 0) and one is: it is
   * interrupted at the end of this turn if still so (`#start`), letting the idle isolate exit.
   */
  #letIdleGo(): void {
    if (this.#alive === 0 && this.#waiting) {
      this.#maybeIdle = true;
      this.#schedule();
    }
  }

  /**
   * The ring is gone (`settleWhere` answered false): the tracked operations `pick` chooses fail
   * now (`RingOp.lost` with `status`) and are tracked no more, as `#ringGone` fails them all
   * later. For a close or cancel of this isolate (`Channel`'s `#settleEnded`): a select with a
   * clause on the channel, which is not among its waiters.
   */
  loseWhere(pick: (op: RingOp) => boolean, status: number): void {
    for (const op of [...this.#ops.values()]) {
      if (!pick(op)) continue;
      this.#ops.delete(op.ticket);
      this.#forget(op);
      try {
        op.lost?.(status);
      } catch (e) {
        reportUncaught(e);
      }
    }
  }

  /**
   * Settles the operations of `settleWhere`'s picked records (`#picked`), in order. Settling one
   * may run the caller's code (a select's onSend value at its channel's hook) that settles again:
   * a close of another channel (a nested `settleWhere`), the library's close (`#closing`'s
   * `#drain`). The list is this object's, as `#drain`'s batch is, so that they settle the rest
   * of it first. Before, each call kept its list to itself: the nested close settled its newer
   * records first, and after a `closeLibrary()` the rest settled with the library closed
   * (LibraryClosedError for waits the channel's close had failed).
   */
  #complete(): void {
    const picked = this.#picked;
    while (this.#pickedNext < picked.length) {
      const [op, status, index] = picked[this.#pickedNext++];
      try {
        op.complete(status, index);
      } catch (e) {
        reportUncaught(e);
      }
    }
    picked.length = 0;
    this.#pickedNext = 0;
  }

  /** `settleWhere`'s picked records, as (op, status, index), oldest first. */
  readonly #picked: [RingOp, number, number][] = [];
  /** The next of `#picked` to settle (`#complete`). */
  #pickedNext = 0;

  /**
   * Records `settleWhere` drained and held, as (ticket, status, index) triples, oldest first,
   * from `#heldHead`; one taken out of turn (a later `settleWhere`'s pick) or settled is cleared
   * in place (ticket 0, which names no operation: `#settle` ignores it), and the list is emptied
   * once none is left (`#heldLive`). Before, each was spliced out: a drain of n held records
   * moved the rest n times (16,000 records: 0.6 s; 64,000: 4.7 s).
   */
  #held: number[] = [];
  /** Where in `#held` the oldest record not yet settled by `#drainRecords` may be. */
  #heldHead = 0;
  /** How many records of `#held` are neither taken nor settled. */
  #heldLive = 0;
  /**
   * The entry (`HeldOn`) of its channel's records of its kind each record of `#held` is in (its
   * triple's number), undefined where none is (no channel: a close watch's, or an operation
   * withdrawn meanwhile) or once taken: no channel's state kept alive by a record gone.
   */
  #heldIn: (HeldOn | undefined)[] = [];
  /**
   * The records of sends held on each channel, for `settleWhere`'s `on` (`sends` true or
   * undefined): their places in `#held`, oldest first, and how many of them are live (an entry
   * goes once none is). A pick on the channel drops the places of the records it takes; a place
   * whose record the held records' drain settled since (ticket 0) stays until a pick of its kind
   * on its channel walks past it, which drops it: each place is looked at once more at most.
   */
  readonly #heldSends = new Map<unknown, HeldOn>();
  /** The records of receives held on each channel, as `#heldSends`. */
  readonly #heldReceives = new Map<unknown, HeldOn>();

  /** Holds a record `settleWhere` drained and did not pick (of `op`, if it is still tracked). */
  #hold(ticket: number, status: number, index: number, op: RingOp | undefined): void {
    const i = this.#held.length;
    this.#held.push(ticket, status, index);
    this.#heldLive++;
    const at = op?.channelAt?.(index);
    if (at === undefined) {
      this.#heldIn.push(undefined);
      return;
    }
    const sends = op!.sendsAt?.(index) === true;
    const map = sends ? this.#heldSends : this.#heldReceives;
    let on = map.get(at);
    if (on === undefined) map.set(at, on = new HeldOn(at, sends, i));
    else {
      on.places.push(i);
      on.live++;
    }
    this.#heldIn.push(on);
  }

  /**
   * `settleWhere`'s pick of the records held on channel `at`, of the kind `sends` says
   * (undefined: both): each live one is given to `pick`, oldest first (both kinds' lists walked
   * together, by place); those it takes are taken (`#take`). The places of records no longer
   * live are dropped from a list as it is walked, and the walk of a list stops at its last live
   * one (those after it are dropped too).
   */
  #takeHeldOn(
    pick: (op: RingOp, index: number) => boolean,
    at: unknown,
    sends: boolean | undefined,
  ): void {
    const onS = sends === false ? undefined : this.#heldSends.get(at);
    const onR = sends === true ? undefined : this.#heldReceives.get(at);
    if (onS === undefined && onR === undefined) return;
    const held = this.#held, ps = onS?.places, pr = onR?.places;
    let leftS = onS?.live ?? 0, leftR = onR?.live ?? 0;
    let s = 0, r = 0, keptS = 0, keptR = 0;
    while (leftS > 0 || leftR > 0) {
      // The older of the two lists' next places; a list past its last live one has none.
      const fromS = leftS > 0 && (leftR === 0 || ps![s] < pr![r]);
      const i = fromS ? ps![s++] : pr![r++], ticket = held[i];
      this.#heldSteps++;
      // Taken or settled since it was held: the held records' drain settled it, and a record
      // after it ran code (a close watch's watcher) that made this pick.
      if (ticket === 0) continue;
      if (fromS) leftS--;
      else leftR--;
      const op = this.#ops.get(ticket);
      if (op !== undefined && pick(op, held[i + 2])) this.#take(op, i);
      else if (fromS) ps![keptS++] = i;
      else pr![keptR++] = i;
    }
    // Past a list's last live one, only places no longer live are left. The entry may be gone
    // (its last live record taken: `#unhold`), and `#held` emptied with it: then nothing is kept.
    if (ps !== undefined) ps.length = keptS;
    if (pr !== undefined) pr.length = keptR;
  }

  /** The held record at `i` (of `op`) is picked: settled first by `#complete`. */
  #take(op: RingOp, i: number): void {
    const held = this.#held;
    this.#ops.delete(held[i]);
    this.#forget(op);
    this.#picked.push([op, held[i + 1], held[i + 2]]);
    this.#unhold(i);
  }

  /**
   * Clears the held record at `i` (its triple's first number: taken or settled now), and the
   * list once none is left.
   */
  #unhold(i: number): void {
    this.#held[i] = 0;
    const on = this.#heldIn[i / 3];
    if (on !== undefined) {
      this.#heldIn[i / 3] = undefined;
      if (--on.live === 0) (on.sends ? this.#heldSends : this.#heldReceives).delete(on.at);
    }
    if (--this.#heldLive > 0) return;
    this.#held.length = 0;
    this.#heldIn.length = 0;
    this.#heldHead = 0;
  }

  /** Entries of `#held` looked at (`heldSteps`). */
  #heldSteps = 0;
  /** A `#drain` of the held records is scheduled. */
  #heldDue = false;
  /** `settleWhere`'s batch (not `#records`, which a drain in progress may still be settling). */
  readonly #early = new Uint32Array(4 * BATCH);

  /** The ticket of the last queued `submit`. */
  get ticket(): number {
    return this.#out[0];
  }

  /**
   * Runs `op.flush()` once this turn of the event loop is over (where an operation that waits
   * in JavaScript gets queued natively): a same-isolate partner usually takes it over before
   * then (ping-pong), and then no FFI call or thread hop is spent on it at all.
   */
  defer(op: { flush(): void }): void {
    this.#deferred.push(op);
    if (this.#closePassed) this.#closeAgain();
    this.#schedule();
  }

  /**
   * Starts watching a queued operation; starts the one wait if none is outstanding, unless
   * only this isolate's own native calls can complete it (`RingOp.inside`: see `touch`).
   */
  track(op: RingOp): void {
    this.#ops.set(op.ticket, op);
    if (this.#closePassed) this.#closeAgain();
    if (op.inside !== undefined && op.inside()) {
      op.keepsAlive = false;
      return;
    }
    op.keepsAlive = true;
    this.#alive++;
    if (!this.#waiting) this.#schedule();
  }

  /** `op` is tracked no more: counted out of `#alive` if it was in it. */
  #forget(op: RingOp): void {
    if (op.keepsAlive !== true) return;
    op.keepsAlive = false;
    this.#alive--;
  }

  /**
   * A channel went outside (its handle was read, it was shared or opened with `Channel.from`):
   * the pending operations that were inside and are not any more (`RingOp.inside`) keep the
   * ring wait outstanding from now on, which starts if none is. Once per channel.
   */
  reconsider(): void {
    if (this.#ops.size === this.#alive) return; // none is inside
    for (const op of this.#ops.values()) {
      if (op.keepsAlive === true || (op.inside !== undefined && op.inside())) continue;
      op.keepsAlive = true;
      this.#alive++;
    }
    if (this.#alive > 0 && !this.#waiting) this.#schedule();
  }

  /**
   * Called before a native call on a channel that is native but inside (see `RingOp.inside`),
   * which may complete an inside operation of this isolate (a try that meets it, a send or
   * receive queued that pairs with it at once, a select's arming, a close, a cancel, a destroy,
   * a value given back): its record lands in this ring during the call, and no wait is
   * outstanding to wake for it, so the ring is drained in a microtask after it (at most one
   * queued at a time). Channels that are local (no native call) or outside (the wait drains
   * their records) never call this.
   */
  touch(): void {
    if (this.#touchDue) return;
    this.#touchDue = true;
    queueMicrotask(this.#drainInside);
  }

  readonly #drainInside = (): void => {
    this.#touchDue = false;
    // An outstanding wait drains the ring itself as it wakes (a record wakes it).
    if (this.#waiting || this.#ops.size === this.#alive || !isLibraryOpen(this.#lib)) return;
    const rc = this.#drain();
    if (rc < 0 && isLibraryOpen(this.#lib)) this.#ringGone(rc); // destroyed by hand, as a test does
  };

  /** `#closing` has run: the library is closing (its later hooks run) or closed. */
  #closePassed = false;
  /** A second `#closing` is registered to run after the close hooks registered so far. */
  #closeQueued = false;
  /** What is left of the close's wait for records (`#awaitRecords`), in ms. */
  #waitLeft = CLOSE_WAIT_MS;

  /**
   * An operation begun after `#closing` (by a later close hook, or an "error" listener a
   * hook's reportError calls) while the library is still open: `#closing` runs again once
   * those hooks have, so that it is withdrawn, or settled if it completed first, as the
   * operations before it were. Before, it stayed queued until `#closed` destroyed the ring,
   * and one that completed in between (a send a native receiver took) was failed with a
   * LibraryClosedError all the same: reported not sent, yet delivered.
   */
  #closeAgain(): void {
    if (this.#closeQueued || !isLibraryOpen(this.#lib)) return;
    this.#closeQueued = true;
    beforeClose(this.#lib, () => {
      this.#closeQueued = false;
      this.#closing();
    }, "the withdrawal of waits begun during the close");
  }

  #deferred: { flush(): void }[] = [];
  #starting = false;
  /** An abort left nothing pending while a wait is outstanding: see `#start`. */
  #maybeIdle = false;

  #schedule(): void {
    if (this.#starting) return;
    // setImmediate, not setTimeout(0): Deno delays the latter by ~2 ms here, which every
    // completion from another thread would wait.
    this.#starting = true;
    setImmediate(this.#start);
  }

  readonly #start = (): void => {
    const deferred = this.#deferred;
    this.#deferred = [];
    // The flushes are one batch (`due`), as a drain's records are: a send that finds the channel
    // cancelled (by native code, or another isolate) as it queues rejects, and its value
    // reaches onUndeliveredElement once every flush has settled, as a local cancel rejects every
    // waiting send before its hook runs. Before, the first such send's hook ran before it, and
    // the later sends of the flush, rejected.
    const outer = this.due !== null;
    if (!outer) this.due = this.#dueRuns;
    try {
      for (const op of deferred) {
        try {
          op.flush(); // may track(): #starting is still set, so that schedules nothing
        } catch (e) {
          reportUncaught(e);
        }
      }
    } finally {
      if (!outer) this.#runDue(); // a hook's send defers: scheduled below (`#starting`)
    }
    this.#starting = false;
    if (this.#deferred.length > 0) this.#schedule();
    if (this.#maybeIdle) {
      // Still nothing pending after this turn's flushes: let the idle isolate exit. Not at
      // the abort itself: a same-isolate ping-pong that yields to the event loop aborts its
      // queued waiter and queues the next one every turn, and interrupting the wait each time
      // (a futex wake, a blocking-pool thread's round trip, a new wait) cost ~20 us a turn.
      this.#maybeIdle = false;
      if (this.#alive === 0 && this.#waiting && isLibraryOpen(this.#lib)) {
        this.#sym.kc_ring_interrupt(this.#ring);
      }
    }
    if (!this.#waiting && this.#alive > 0) void this.#loop();
  };

  /**
   * Withdraws a queued operation: 0 withdrawn (no record will come), KC_EBUSY when it
   * completed already (its record settles it), or another negative status (KC_EBADH: its ring
   * or its ticket is gone, e.g. the ring was destroyed): no record will come for it either,
   * and it is tracked no more, so the caller settles it (with that status's error). Counted as a
   * cancelled failure in the channel's metrics (a select's on each of its channels), unless
   * `uncounted`: the operation did not fail (this isolate completes it itself, handing a value
   * between two of its own waiters, counted as a hand-off; or a select's JavaScript clause won)
   * (`kc_ring_withdraw`).
   */
  abort(op: RingOp, uncounted = false): number {
    // No native call once the ring is destroyed (`#closed`), or gone (destroyed by hand) with
    // the library closed: nothing is queued on it any more. Not merely once the library is
    // closed: until `#closed` destroys the ring, what `#closing` left queued there (begun by a
    // close hook of the last round, or "busy" past the close's budget) is still on it, and
    // user code run meanwhile (an onUndeliveredElement hook given a withdrawn send's value, a
    // local channel's close) may give it up. Before, such an abort answered "withdrawn"
    // without withdrawing it: a select's send values went to onUndeliveredElement, and again
    // from the ring's teardown (`dropUnsent`) at their channel's dispose.
    const rc = this.#destroyed || (this.#gone && !isLibraryOpen(this.#lib))
      ? 0
      : uncounted
      ? this.#sym.kc_ring_withdraw(this.#ring, op.ticket)
      : this.#sym.kc_ring_abort(this.#ring, op.ticket);
    if (rc === Status.EBUSY) return rc;
    this.#ops.delete(op.ticket);
    this.#forget(op);
    this.#letIdleGo(); // at the end of this turn, let the idle isolate exit (`#start`)
    return rc;
  }

  /**
   * After a record: copies a received value into `out`, frees the ticket. `out` is null where
   * nothing was received (a send, a failed operation): there the native take refuses one
   * (KC_EINVAL, the ticket kept).
   */
  take(op: RingOp, out: Slot | null, size: number): number {
    // Settled after the ring's destroy (`#closed`: a wait given up whose record never came, cut
    // off): no native call on the dead ring's handle, which its destroy freed with its tickets.
    // Before, a cut-off receive given up took its ticket from the ring destroyed (KC_EBADH).
    if (this.#destroyed) return Status.EBADH;
    return this.#sym.kc_ring_take_at(this.#ring, op.ticket, out === null ? null : out.ptr, size);
  }

  /**
   * After a record, `take` for a receive that will not deliver its value (its wait was given
   * up and the abort lost to this completion): the value goes back to its channel, in front of
   * the values buffered there (`kc_ring_give_back`), and the ticket is freed.
   */
  giveBack(op: RingOp): number {
    if (this.#destroyed) return Status.EBADH; // as `take`: the destroy gave the value back
    // The value may complete a receive of this isolate waiting natively (`touch`).
    if (this.#alive < this.#ops.size) this.touch();
    const rc = this.#sym.kc_ring_give_back(this.#ring, op.ticket);
    // Its record, if it went to such a receive, is in the ring now: the drain settling this
    // batch drains once more (`#drainRecords`).
    this.#gaveBack = true;
    this.#givenBack++;
    // The ring gone (destroyed by hand after this record was drained: a drain of nothing fails
    // too): its destroy gave the value back already. Before, that was reported as a value lost
    // (an uncaught error, which ends a process with no "error" listener), though it was not.
    if (rc < 0 && this.#sym.kc_ring_drain(this.#ring, this.#early, 0) >= 0) {
      // Not expected (the record was drained here, the ring is alive): the value cannot go
      // back, so it is not lost silently.
      reportError(
        new KcoroError(
          rc,
          `Cannot give back the value an aborted receive took (ticket ${op.ticket}): it is lost`,
        ),
      );
    }
    return rc;
  }

  async #loop(): Promise<void> {
    this.#waiting = true;
    let got = 0;
    try {
      while (this.#alive > 0 && isLibraryOpen(this.#lib)) {
        got = await this.#sym.kc_ring_wait(this.#ring, WAIT_NS);
        if (!isLibraryOpen(this.#lib)) return;
        if (got < 0) {
          this.#ringGone(got, true);
          return;
        }
        // Also after 0 (a timeout or an interrupt), which says only that no record was ready
        // when the wait last looked: not that the ring is empty now. A record this isolate's
        // own native call made meanwhile (an inside operation's: `touch` leaves it to this
        // outstanding wait, `#drainInside`) lands after that look, and where the loop then
        // ends (the interrupt of an isolate gone idle, `#alive` 0) no later wait or touch
        // would drain it.
        const rc = this.#drain();
        // Destroyed while this wait was blocked (it returned 0; a destroy by hand, as a test
        // does): the loop does not wait again to learn it (an FFI round trip on the blocking
        // pool later). Its close watches learn it now that the wait has let go of the ring
        // (`#ringGone`, `waited`), its other operations too where nothing else failed them yet.
        // Before, this failure was ignored: the loop went on to a wait that failed, or ended
        // (nothing pending), and watches left to it by an earlier `#ringGone` learnt it only at
        // the watches' poll (unref'd: perhaps never).
        if (rc < 0) {
          if (isLibraryOpen(this.#lib)) this.#ringGone(rc, true);
          return;
        }
      }
    } finally {
      this.#waiting = false;
    }
  }

  /**
   * The ring is gone (`kc_ring_wait` said `status`, KC_EBADH) with the library open: destroyed
   * by hand, as a test does. The records already drained (a batch, or those `settleWhere` held)
   * settle their operations first; no record will come for the others, which fail now
   * (`RingOp.lost`). Before, an operation completed natively whose record was not drained
   * waited for ever: one completed before the destroy, its record not drained yet (a queued
   * send whose value a `tryReceive` of this isolate took in that turn), or one a try completed
   * after it, before the ring's teardown took the ring's waits off their channels (the teardown
   * waits for this loop's `kc_ring_wait` to let go of the ring: a window a loaded host widens).
   * No withdrawal, which would have failed it, was asked for either.
   *
   * The close watches are told (`#watchesLost`) only once no `kc_ring_wait` of this loop holds
   * the ring (`waited`: the loop's own, whose wait returned; else none outstanding): its
   * teardown, which cancels an owned watch's channel (`KC_WATCH_OWNED`), runs as the last
   * reference goes, so a watch told while the wait still held it read its channel open and
   * was never told of that cancel (`settleWhere`'s failed drain, `#goneSoon`: a microtask, on
   * a loaded host before the wait's thread let go). Those are left to the loop, which tells
   * them as its wait returns.
   */
  #ringGone(status: number, waited = false): void {
    this.#drain(); // settles what was drained; the ring's own drain then fails
    const ops = [...this.#ops.values()];
    this.#ops.clear();
    this.#alive = 0;
    for (const op of ops) {
      op.keepsAlive = false;
      try {
        op.lost?.(status);
      } catch (e) {
        reportUncaught(e);
      }
    }
    if (waited || !this.#waiting) this.#watchesLost(status);
  }

  /**
   * The ring is gone (`status`, KC_EBADH) with the library open: no record will come for the
   * close watches either, so each is told now (`RingOp.lost`: what its channel's status still
   * says) and tracked no more, and the poll stops. Before, their records were waited for as
   * long as the isolate lived (`#pollWatches` draining the dead ring), and a cancel that came
   * (the ring's own going away cancels an owned watch's channel) was never told.
   */
  #watchesLost(status: number): void {
    const watches = [...this.#watches.values()];
    this.#watches.clear();
    this.#stopPoll();
    for (const op of watches) {
      try {
        if (op.lost !== undefined) op.lost(status);
        else op.withdrawn();
      } catch (e) {
        reportUncaught(e);
      }
    }
  }

  /** Close watches queued and not yet settled (for tests). */
  get watched(): number {
    return this.#watches.size;
  }

  /**
   * How many entries of the held list (`#held`, a record each) `settleWhere`'s scan and the
   * drain's settle of it have looked at, ever (for tests: a drain of n held records looks at n,
   * where the splice each took moved all the rest, n²/2).
   */
  get heldSteps(): number {
    return this.#heldSteps;
  }

  /** Settles the operation or close watch of one record drained (none: withdrawn meanwhile). */
  #settle(ticket: number, status: number, index: number): void {
    let op = this.#ops.get(ticket);
    if (op !== undefined) {
      this.#ops.delete(ticket);
      this.#forget(op);
    } else {
      op = this.#watches.get(ticket); // a close watch's record
      if (op === undefined) return;
      this.#watches.delete(ticket);
      this.#stopPoll();
    }
    try {
      op.complete(status, index);
    } catch (e) {
      reportUncaught(e);
    }
  }

  /** Records in `#records` (the last batch drained), and the next of them to settle. */
  #count = 0;
  #next = 0;

  /**
   * Settles every ready record. Settling one may run the caller's code (an onUndeliveredElement
   * hook, an "error" listener of reportError) that drains again: the library's close
   * (`#closing`) does. The batch drained and not yet settled is this object's, so that a nested
   * drain settles the rest of it first, and the outer one then goes on after them. Before, each
   * drain kept its batch to itself: the close found those operations completed (their records
   * taken off the ring), waited a second for records that could not come, and failed them as
   * cut off (a receive's value lost, a delivered send handed to onUndeliveredElement too); the
   * outer loop, had the nested drain found records, read its batch over its own. Negative: the
   * ring's drain failed with that status (the ring is gone), else 0.
   */
  #drain(): number {
    // The collects (onUndeliveredElement) that settles of this drain left to its end (`due`):
    // run once the whole batch has settled, by the outermost drain.
    // One map for every drain (`#dueRuns`), not one made per wake-up: most drains leave none.
    const outer = this.due !== null;
    if (!outer) this.due = this.#dueRuns;
    try {
      return this.#drainRecords();
    } finally {
      if (!outer) this.#runDue();
    }
  }

  /**
   * Begins a batch of settles (`due`) for a caller outside the ring's own drains (a channel's
   * close or cancel, `Channel.#settleEnded`), unless one is under way: true where it began one,
   * which the caller ends with `endDue`.
   */
  beginDue(): boolean {
    if (this.due !== null) return false;
    this.due = this.#dueRuns;
    return true;
  }

  /** Ends the batch `beginDue` began: runs the collects its settles left to its end. */
  endDue(): void {
    this.#runDue();
  }

  /** Ends the batch that set `due`: runs the collects its settles left to its end. */
  #runDue(): void {
    this.due = null;
    if (this.#dueRuns.size === 0) return;
    // Taken out first: a collect's hook may run a drain of its own, which reuses the map.
    const runs = [...this.#dueRuns.values()];
    this.#dueRuns.clear();
    for (const run of runs) {
      try {
        run();
      } catch (e) {
        reportUncaught(e);
      }
    }
  }

  /** `due`'s map while a drain settles, empty between drains. */
  readonly #dueRuns = new Map<unknown, () => void>();

  /**
   * While `#drain` settles (also while `#start` or `#closing` flush the waits still in
   * JavaScript, which may find their channel cancelled as they queue): the collects its settles
   * left to its end (`Channel`'s `#collectSettled`, with the values of the sends refused then),
   * one per channel, run once every record drained (every wait flushed) has settled, as a local
   * channel's cancel rejects every waiting send before its hook runs (`#localDrop`). Before, the
   * first send a native cancel failed ran the hook for every dropped value before the later
   * sends of the batch rejected. Null otherwise.
   */
  due: Map<unknown, () => void> | null = null;

  #drainRecords(): number {
    let more = true;
    while (true) {
      // Picked by a `settleWhere` whose settle ran this drain: older than what the ring holds.
      if (this.#pickedNext < this.#picked.length) this.#complete();
      while (this.#next < this.#count) {
        const i = this.#next++;
        this.#settle(this.#records[4 * i], this.#statuses[4 * i + 1], this.#records[4 * i + 2]);
      }
      if (this.#heldLive > 0) {
        // Drained by `settleWhere` after this batch, before what the ring holds now: the oldest
        // not taken (`#unhold`: none is spliced out, each splice moving the rest).
        const held = this.#held;
        let i = this.#heldHead;
        while (held[i] === 0) {
          i += 3;
          this.#heldSteps++; // one taken out of turn, skipped once
        }
        this.#heldSteps++;
        const ticket = held[i], status = held[i + 1], index = held[i + 2];
        this.#heldHead = i + 3;
        this.#unhold(i);
        this.#settle(ticket, status, index);
        continue;
      }
      if (!isLibraryOpen(this.#lib)) return 0; // closed by a callback: its ring is gone
      // A value this batch's settles gave back (an aborted receive's or select's, `giveBack`)
      // went straight to a receiver waiting natively, if one was: when it is one of this
      // isolate's (a select's receive clause too), its record is in the ring now, and settles in
      // this drain, after the records before it, as the isolate's own call that completed it
      // (README's abort paragraph). Before, it settled at the ring's next wake, and an abort in
      // between (the first one's rejection handler's, say) rejected it too, the value going back
      // again.
      if (!more && !this.#gaveBack) return 0;
      this.#gaveBack = false;
      const n = this.#sym.kc_ring_drain(this.#ring, this.#records, BATCH);
      this.#next = 0;
      this.#count = n > 0 ? n : 0;
      if (n < 0) this.#gone = true;
      if (n <= 0) return n;
      more = n === BATCH;
    }
  }
}

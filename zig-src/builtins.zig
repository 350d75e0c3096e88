//! Built-in native entry functions, for callers that have no native code of their own to run
//! (TypeScript among them): the demo, the tests and the benchmarks use them. Each takes its
//! argument either as an integer (`arg` cast to usize) or as a pointer to a caller-owned array
//! of u64 cells, as its comment says; cells a coroutine writes are updated atomically.
const std = @import("std");
const coroutine = @import("coro/coroutine.zig");
const scheduler = @import("sched/scheduler.zig");
const scope_mod = @import("sc/scope.zig");
const status_mod = @import("status.zig");
const assert = std.debug.assert;

pub const Builtin = enum(u32) {
    /// Hand-driven. Yields the first `arg` (integer) Fibonacci numbers through the transfer
    /// word, modulo 2^64 (the 94th, F(93), is the last that fits; later ones wrap), then
    /// finishes.
    fib = 1,
    /// Hand-driven. Yields forever; the transfer word counts the yields.
    yield_loop = 2,
    /// Hand-driven. Parks `arg` (integer) times, counting wake-ups in the transfer word.
    park_loop = 3,
    /// Scheduled. `arg` -> u64[2] { milliseconds, done }: sleeps (a number of milliseconds past
    /// 2^64 ns saturates: for ever), then adds 1 to `done`: abandoned in its sleep (a shutdown
    /// that cancels), `done` stays as it was, which tells it from one that slept its time
    /// (it has no `status` cell to say so; the three-cell sleeper's does).
    sleeper = 4,
    /// Scheduled. `arg` -> u64[2] { leaves (a power of 10), result }: the skynet benchmark, a
    /// 10-ary tree of coroutines summing the leaf indices 0..leaves-1 into `result` (for
    /// another count, each node splits its integer tenth ten ways: a smaller tree's sum).
    skynet = 5,
    /// Scheduled. `arg` -> u64[2] { rounds, done }: CPU-bound work (a hash chain of `rounds`
    /// steps), then adds 1 to `done`. Yields every `spin_turn_rounds` steps; a shutdown, the
    /// cancellation of its native scope or its context deadline passing stops it there,
    /// leaving `done` as it was.
    spin = 6,
    /// Scheduled. `arg` -> u64[3] { milliseconds, done, status }: sleeps like kc_sleep_ns, so
    /// inside a native scope it ends early when the scope is cancelled; then `status` = 0 or
    /// KC_EINTR (as two's complement) and `done` = 1. Abandoned in its sleep (a shutdown that
    /// cancels), `status` = KC_ESHUTDOWN and `done` = 1 (`DoneOnAbandon`); hand-driven (no
    /// scheduler), `status` = KC_ENOTCORO and `done` = 1 at its first resume.
    cancellable_sleeper = 7,
    /// Scheduled. `arg` -> u64[3] { channel handle, done, status }: receives one value from the
    /// channel (discarded; not a zero-copy channel), then `status` = 0, KC_EINTR (its scope was
    /// cancelled), KC_EPIPE, KC_ECANCELED or KC_EBADH and `done` = 1; abandoned in its receive
    /// (a shutdown that cancels, a finish that leaves it parked, a kc_coro_destroy), `status` =
    /// KC_ESHUTDOWN and `done` = 1 (`DoneOnAbandon`). Lives in root.zig.
    receiver = 8,
    /// Scheduled. `arg` -> u64[3] { unused, done, status }: cancels the native scope it runs
    /// in, as C code calling kc_scope_cancel would; `status` = 1 if it did, 0 if it was
    /// cancelled already, KC_EINVAL outside a scope; then `done` = 1.
    cancel_scope = 9,
    /// Scheduled. `arg` -> u64[5] { channel handle, first, count, sent, done }: sends the u64
    /// values first .. first+count-1 (at most up to 2^64-1) to the channel (element size 8),
    /// counting each in `sent`,
    /// stopping early if a send fails (closed), a shutdown comes, its native scope is
    /// cancelled or its context deadline passes (it yields every `loop_turn_every` values,
    /// where it looks; hand-driven, it
    /// yields back to its resumer there); then adds 1 to `done`, also when abandoned (in its
    /// send or at a turn: a shutdown that cancels, a destroy). A native producer for
    /// channels shared with JavaScript isolates and Workers.
    chan_sender = 10,
    /// Scheduled. `arg` -> u64[3] { deadline, done, status }: writes its context's deadline
    /// (kc_deadline: 0 for none) into cell 0, then `status` = 0 and `done` = 1.
    read_deadline = 11,
    /// Scheduled. `arg` -> u64[4] { in channel, out channel, echoed, done }: receives each
    /// 8-byte value of `in` and sends it to `out` (counting it in `echoed`) until either fails,
    /// a shutdown comes, its native scope is cancelled or its context deadline passes (it
    /// yields every `loop_turn_every` values, where it looks; hand-driven, it yields back to
    /// its resumer there); then
    /// `done` = 1, also when abandoned (in a wait or at a turn: a shutdown that cancels, a
    /// destroy). A native partner for round-trip benchmarks. Lives in root.zig.
    echo = 12,
};

pub fn entry(b: Builtin) *const anyopaque {
    return switch (b) {
        .fib => @ptrCast(&fib),
        .yield_loop => @ptrCast(&yieldLoop),
        .park_loop => @ptrCast(&parkLoop),
        .sleeper => @ptrCast(&sleeper),
        .skynet => @ptrCast(&skynetRoot),
        .spin => @ptrCast(&spin),
        .cancellable_sleeper => @ptrCast(&cancellableSleeper),
        .cancel_scope => @ptrCast(&cancelScope),
        .receiver, .echo => unreachable, // root.zig answers for them: they need the handle table
        .chan_sender => @ptrCast(&chanSender),
        .read_deadline => @ptrCast(&readDeadline),
    };
}

/// Called by a scheduled built-in right before it writes its `done` cell, its last step: it is
/// counted out of its scheduler's live count (kc_sched_info, `runtime().stats().live`) now, so
/// that whoever saw `done` move sees it gone from there too. Before, its worker counted it out
/// only after its entry returned, and a host that saw `done` and then read the count found it
/// still live. The `done` write (release) publishes the count (see `countFinishedNow`).
pub fn countedOut() void {
    scheduler.Scheduler.countFinishedNow();
}

/// A scheduled built-in abandoned (a shutdown that cancels or a finish that leaves it parked,
/// a kc_coro_destroy: in a wait or at a turn) moves its `done` as its return does (`add`: adds
/// 1, else stores 1), from this cleanup, pushed first so run last: the echo's, the
/// chanSender's, the cancellable sleeper's and the receiver's (not the two-cell sleeper's: its
/// `done` says it slept its time). A three-cell one's `status` (cell 2) says KC_ESHUTDOWN
/// then, a status none of them returns with (their waits never report it: a channel's
/// receive and a scope's sleep have no error.Shutdown). Before, `done` never moved, and a host
/// waiting for it could not tell an abandoned built-in from a running one. The shutdown
/// counted the coroutine out already (`releaseAbandoned`); run on the abandoning thread,
/// after the other cleanups (in a shutdown, before an echo's value in hand reaches `out`'s
/// undelivered path, which comes before kc_sched_shutdown returns: a host that sees `done`
/// before that return may find `out`'s dropped count one short for a moment).
pub const DoneOnAbandon = struct {
    cleanup: coroutine.Cleanup = .{ .run = run },
    done: *std.atomic.Value(u64),
    add: bool,
    /// The `status` cell of a three-cell built-in (`finish`'s), set to KC_ESHUTDOWN.
    status: ?*std.atomic.Value(u64) = null,

    fn run(cl: *coroutine.Cleanup) void {
        const d: *DoneOnAbandon = @fieldParentPtr("cleanup", cl);
        // Monotonic: published by the release of `done` below, as `finish`'s.
        if (d.status) |st| st.store(@bitCast(@as(i64, status_mod.Status.shutdown.code())), .monotonic);
        // Release: pairs with the host's acquire load of `done`, as at its return; the
        // abandoning thread joined the built-in's worker (or ran it: a destroy), which
        // ordered its counts (`echoed`, `sent`) before this.
        if (d.add) _ = d.done.fetchAdd(1, .release) else d.done.store(1, .release);
    }

    /// For a three-cell built-in (`finish`'s cells): stores 1 and KC_ESHUTDOWN.
    pub fn of3(c: *[3]std.atomic.Value(u64)) DoneOnAbandon {
        return .{ .done = &c[1], .add = false, .status = &c[2] };
    }
};

/// Stores `status` in cell 2, then sets `done` (cell 1) for the three-cell built-ins.
pub fn finish(c: *[3]std.atomic.Value(u64), status: i32) void {
    // Monotonic: published by the release store of `done` below.
    c[2].store(@bitCast(@as(i64, status)), .monotonic);
    countedOut();
    // Release: pairs with the reader's acquire of `done` (or the scope wait that precedes its
    // read), which then sees `status` and the count-out.
    c[1].store(1, .release);
    if (@import("builtin").is_test) if (test_after_done) |f| f(c);
}

/// Tests: run by `finish` right after its `done` store, on the built-in's thread: what a host
/// that sees `done` may find at once (a built-in must hold nothing by then).
pub var test_after_done: if (@import("builtin").is_test) ?*const fn (*[3]std.atomic.Value(u64)) void else void =
    if (@import("builtin").is_test) null else {};

/// Iterations of a built-in's loop that may go on without parking (`echo`, `chanSender`; the
/// native actor's messages too) between its turns (`Pacer`): a yield every 256 costs one FIFO
/// round trip (~50 ns) per 256 channel operations, and on a loop that parks (a ping-pong echo)
/// nothing worth measuring.
pub const loop_turn_every: u32 = 256;
/// Hash steps of `spin` between its turns: ~4 ms of work at ~4 ns a step (a shutdown waits
/// about that long for it; Go preempts every 10 ms). Few turns: one that yields goes to its
/// worker's FIFO list, which no other worker can steal from, so with short slices a worker
/// could end a fan-out holding several half-done spins (every 61st tick takes one more from
/// the inject queue) while another had none left; the CPU fan-out benchmark's spins (2M
/// steps) take one turn each.
pub const spin_turn_rounds: u64 = 1 << 20;

/// A scheduled built-in's turn, taken now and then by a loop that may run without ever parking
/// (an echo whose `in` is its own conflated `out`, two echoes feeding each other, a chanSender
/// to a drop-policy channel, a spin of many rounds). Before, such a loop kept its worker for
/// good: the coroutines queued behind it never ran, and a shutdown, which stops a worker only
/// once its coroutine parks, yields or ends, never returned. False when the scheduler running
/// it is shutting down: the built-in stops there, between iterations (nothing in hand). Else it
/// yields (to the back of its worker's line) and, resumed, answers whether the scheduler still
/// runs (a shutdown that began meanwhile ends it at once; one that its worker saw first never
/// resumes it: the shutdown abandons it, as a parked one). A hand-driven coroutine (no owner)
/// yields too, back to its resumer, whose `kc_coro_resume` returns KC_STATE_SUSPENDED (the
/// transfer word unchanged), and goes on when resumed again: true (no shutdown stops it). Before,
/// it went on at once, and a hand-driven echo on its own conflated channel (or a chanSender to
/// one, a long spin) never returned from `kc_coro_resume`. True at once on a plain thread.
pub fn turn() bool {
    const co = coroutine.current() orelse return true;
    // Monotonic: the coroutine's own `owner`, stored before it first ran (a hand-driven one,
    // also one resumed on a worker by a scheduled one, has none); the create or spawn that
    // published it to this thread ordered it before us.
    const owner = @atomicLoad(?*anyopaque, &co.owner, .monotonic);
    if (owner == null) {
        coroutine.yield() catch unreachable; // running as `co`
        return true;
    }
    const s = scheduler.currentScheduler() orelse return true;
    if (owner != @as(?*anyopaque, s)) return true;
    // `isRunning`'s acquire load pairs with `shutdown`'s seq_cst store of `stopping`; a flag
    // here, ordering nothing else we read.
    if (!s.isRunning()) return false;
    coroutine.yield() catch unreachable; // running as `co`
    return s.isRunning(); // the same scheduler: a coroutine never moves to another one
}

/// Whether the native scope the calling coroutine runs in (its context's token) is cancelled;
/// false outside one. `isCancelled`'s acquire load pairs with the scope cancel's release store.
fn scopeCancelled() bool {
    const t = scope_mod.currentToken() orelse return false;
    return t.isCancelled();
}

/// Whether the deadline in the calling coroutine's context (`Scope.setDeadline`,
/// kc_scope_set_deadline: a `withTimeout` around a TypeScript scope) has passed; false with
/// none. The context is immutable and the coroutine's own: no atomics.
fn deadlinePassed() bool {
    const d = scope_mod.currentDeadline() orelse return false;
    return scheduler.monotonicNs() >= d;
}

/// Whether a built-in loop must stop at its turn for its native scope: cancelled, or its
/// context deadline passed. Before, the deadline was looked at only by channel operations that
/// wait (KC_ETIME): a loop whose operations never wait (and a spin, which has none) ran on
/// past it, and a scope whose only stop was its deadline never completed.
fn scopeStops() bool {
    return scopeCancelled() or deadlinePassed();
}

/// Counts a built-in loop's iterations and takes a `turn` every `every`th.
pub const Pacer = struct {
    every: u32,
    left: u32,

    pub fn init(every: u32) Pacer {
        assert(every > 0);
        return .{ .every = every, .left = every };
    }

    /// Called before each iteration: false when the loop must stop: a shutdown (see `turn`),
    /// or the cancellation of the native scope it runs in, or its context deadline passing
    /// (`scopeStops`), looked at after the turn (as the actor looks between messages).
    /// Before, a loop whose channel operations never wait, so never see the scope's KC_EINTR
    /// (nor KC_ETIME at its deadline), ran on in a cancelled scope, and kc_scope_wait never
    /// returned.
    pub fn go(p: *Pacer) bool {
        if (!p.due()) return true;
        return turn() and !scopeStops();
    }

    /// Counts one iteration: true at every `every`th, where the caller takes its `turn` (a
    /// loop that tells its stops apart, as the native actor does, looks at each itself).
    pub fn due(p: *Pacer) bool {
        assert(p.left > 0 and p.left <= p.every);
        p.left -= 1;
        if (p.left != 0) return false;
        p.left = p.every;
        return true;
    }
};

// The argument cells a built-in reads first (`arg`, a count, a channel handle) are loaded
// monotonic: the host wrote them before the spawn or launch that runs the built-in, and that
// hand-over (`Scheduler.spawn` pushes the coroutine under the inject queue's mutex, which the
// worker that pops it takes too) orders them before its first instruction; nobody writes them
// while it runs.

fn cells3(arg: ?*anyopaque) *[3]std.atomic.Value(u64) {
    return @ptrCast(@alignCast(arg.?));
}

fn cancellableSleeper(arg: ?*anyopaque) callconv(.c) void {
    const c = cells3(arg);
    // Hand-driven (no scheduler's worker runs it): KC_ENOTCORO, as kc_sleep_ns answers there,
    // and `done` = 1. Before, it returned with `done` 0, and a host waiting for it waited for
    // good.
    const s = scheduler.currentScheduler() orelse return finish(c, status_mod.Status.not_coroutine.code());
    // Monotonic: an argument cell (see `cells3`).
    const deadline = scheduler.monotonicNs() +| c[0].load(.monotonic) *| std.time.ns_per_ms;
    // Abandoned in its sleep (a shutdown that cancels), `done` = 1 and `status` KC_ESHUTDOWN.
    var ended = DoneOnAbandon.of3(c);
    coroutine.pushCleanup(&ended.cleanup);
    const status: i32 = if (scope_mod.sleepUntil(s, deadline, null)) 0 else |err| switch (err) {
        error.Interrupted => status_mod.Status.interrupted.code(),
        else => status_mod.fromError(err).code(),
    };
    coroutine.popCleanup(&ended.cleanup);
    finish(c, status);
}

fn readDeadline(arg: ?*anyopaque) callconv(.c) void {
    const c = cells3(arg);
    c[0].store(scope_mod.currentDeadline() orelse 0, .monotonic); // published by `finish`
    finish(c, 0);
}

fn cancelScope(arg: ?*anyopaque) callconv(.c) void {
    const c = cells3(arg);
    const sc = scope_mod.current() orelse return finish(c, status_mod.Status.invalid.code());
    finish(c, @intFromBool(sc.cancel()));
}

fn cells(arg: ?*anyopaque) *[2]std.atomic.Value(u64) {
    return @ptrCast(@alignCast(arg.?));
}

fn fib(arg: ?*anyopaque) callconv(.c) void {
    const n = @intFromPtr(arg);
    var a: u64 = 0;
    var b: u64 = 1;
    for (0..n) |_| {
        coroutine.yieldValue(a) catch return;
        const next = a +% b;
        a = b;
        b = next;
    }
}

fn yieldLoop(_: ?*anyopaque) callconv(.c) void {
    var i: u64 = 0;
    while (true) {
        i += 1;
        coroutine.yieldValue(i) catch return;
    }
}

fn parkLoop(arg: ?*anyopaque) callconv(.c) void {
    const n = @intFromPtr(arg);
    const co = coroutine.current() orelse return;
    for (0..n) |_| {
        coroutine.park() catch return;
        // Atomic: `kc_coro_transfer` may read it from another thread at any time (a plain
        // store was a data race). Release, as `yieldValue` stores it (see there); the plain
        // load reads this coroutine's own last store (nobody else writes it while it runs).
        @atomicStore(u64, &co.transfer, co.transfer + 1, .release);
    }
}

fn sleeper(arg: ?*anyopaque) callconv(.c) void {
    const c = cells(arg);
    const s = scheduler.currentScheduler() orelse return;
    // Saturating: a huge number of milliseconds sleeps for ever, not for the wrapped rest.
    // Monotonic: an argument cell (see `cells3`).
    s.sleep(c[0].load(.monotonic) *| std.time.ns_per_ms) catch {};
    countedOut();
    // Release: pairs with the reader's acquire (or the drain that precedes its read).
    _ = c[1].fetchAdd(1, .release);
}

/// Mixes `rounds` steps of a 64-bit hash chain: work the optimiser cannot skip.
pub fn spinWork(rounds: u64) u64 {
    return spinSteps(0x9E3779B97F4A7C15, rounds);
}

/// `rounds` more steps of `spinWork`'s chain from `from`.
fn spinSteps(from: u64, rounds: u64) u64 {
    var x = from;
    var i: u64 = 0;
    while (i < rounds) : (i += 1) {
        x ^= x >> 30;
        x *%= 0xBF58476D1CE4E5B9;
        x ^= x >> 27;
        x *%= 0x94D049BB133111EB;
        x ^= x >> 31;
    }
    return x;
}

fn spin(arg: ?*anyopaque) callconv(.c) void {
    const c = cells(arg);
    var left = c[0].load(.monotonic); // an argument cell (see `cells3`)
    var x: u64 = 0x9E3779B97F4A7C15; // `spinWork`'s chain, in slices with a turn between
    while (left > 0) {
        const n = @min(left, spin_turn_rounds);
        x = spinSteps(x, n);
        left -= n;
        // A shutdown stops it, and so does the cancellation of the native scope it runs in, or
        // its context deadline passing (looked at after the turn, as `Pacer` does; before, a
        // spin ran all its rounds in a cancelled scope, and past its deadline, while its
        // kc_scope_wait waited for them): the work not done, `done` stays as it was (as
        // skynet's result).
        if (left > 0 and (!turn() or scopeStops())) return;
    }
    std.mem.doNotOptimizeAway(x);
    countedOut();
    // Release: pairs with the reader's acquire (or the drain that precedes its read).
    _ = c[1].fetchAdd(1, .release);
}

/// The C ABI's send (root.zig): channels are named by handles there.
extern fn kc_chan_send(h: u32, elem: ?*const anyopaque, size: u32, deadline_ns: u64, token: u32, flags: u32) callconv(.c) i32;

fn chanSender(arg: ?*anyopaque) callconv(.c) void {
    const c: *[5]std.atomic.Value(u64) = @ptrCast(@alignCast(arg.?));
    // Monotonic: argument cells (see `cells3`).
    const handle: u32 = @truncate(c[0].load(.monotonic));
    const first = c[1].load(.monotonic);
    // At most up to the largest u64: values past it would wrap (or trap in safe builds).
    const count = @min(c[2].load(.monotonic), std.math.maxInt(u64) - first +| 1);
    var i: u64 = 0;
    // A turn every `loop_turn_every` values: a channel whose sends never block (drop policy,
    // conflated, room) runs it without a park. A shutdown, or its native scope's cancellation
    // (which a send that never waits does not see), stops it as a failed send does.
    var pace = Pacer.init(loop_turn_every);
    // Abandoned (in its send, or at a turn), `done` moves too.
    var ended: DoneOnAbandon = .{ .done = &c[4], .add = true };
    coroutine.pushCleanup(&ended.cleanup);
    while (i < count and pace.go()) : (i += 1) {
        const v: u64 = first + i;
        if (kc_chan_send(handle, &v, @sizeOf(u64), 0, 0, 0) != 0) break;
        // Monotonic: a count the host may watch as it moves (ordering nothing), final once
        // it sees `done` move (the release below).
        _ = c[3].fetchAdd(1, .monotonic);
    }
    coroutine.popCleanup(&ended.cleanup);
    countedOut();
    // Release: pairs with the reader's acquire; `sent` is final before `done` moves.
    _ = c[4].fetchAdd(1, .release);
}

// Skynet: every node spawns 10 children and waits for them; leaves return their index.

pub const SkynetNode = struct {
    index: u64,
    size: u64,
    parent: ?*SkynetNode,
    sum: std.atomic.Value(u64) = .init(0),
    pending: std.atomic.Value(u32) = .init(10),
    /// Set before the node's first child is spawned; children unpark it through this.
    ref: coroutine.Ref = undefined,
    /// For the root: where to put the result.
    out: ?*std.atomic.Value(u64) = null,
    /// Set when a spawn in this node's subtree failed: its sum is short, and the root writes none.
    failed: std.atomic.Value(bool) = .init(false),
};

/// Tests: run by a skynet node right before each spawn of a child, on its worker (a shutdown
/// can be made to come in between).
pub var test_before_spawn: if (@import("builtin").is_test) ?*const fn () void else void =
    if (@import("builtin").is_test) null else {};

/// Tests: asked by a skynet node right before each spawn of a child (after
/// `test_before_spawn`): true refuses that spawn, as running out of stacks would.
pub var test_refuse_spawn: if (@import("builtin").is_test) ?*const fn () bool else void =
    if (@import("builtin").is_test) null else {};

/// Spawns a skynet child, false if refused (`test_refuse_spawn` in tests).
fn spawnChild(s: *scheduler.Scheduler, ch: *SkynetNode) bool {
    if (@import("builtin").is_test) if (test_refuse_spawn) |f| if (f()) return false;
    _ = s.spawn(skynetNode, ch) catch return false;
    return true;
}

pub fn skynetNode(arg: ?*anyopaque) callconv(.c) void {
    const me: *SkynetNode = @ptrCast(@alignCast(arg.?));
    const s = scheduler.currentScheduler().?;
    var result: u64 = me.index;
    if (me.size > 1) {
        const co = coroutine.current().?;
        me.ref = co.ref();
        const child_size = me.size / 10;
        var children: [10]SkynetNode = undefined;
        var spawned: u32 = 0;
        for (&children, 0..) |*ch, i| {
            ch.* = .{ .index = me.index + i * child_size, .size = child_size, .parent = me };
            if (@import("builtin").is_test) if (test_before_spawn) |f| f();
            // A shutdown that comes while this node runs (`rt.shutdown()` during a skynet: its
            // workers stop once their coroutines park) refuses the spawn with error.Shutdown,
            // and so does running out of stacks with error.OutOfMemory. Both were `catch
            // unreachable`: undefined behaviour, a panic in safe builds. The rest is not
            // spawned, nor waited for, and the sum is short: the root writes none.
            if (!spawnChild(s, ch)) {
                me.failed.store(true, .monotonic); // published by the decrement below
                break;
            }
            spawned += 1;
        }
        // Acq_rel, as a child's decrement (below): whichever of them reaches 0 is the last one.
        // Reaching it here (every child spawned has finished) wakes nobody: this node then
        // does not park.
        if (spawned < 10) _ = me.pending.fetchSub(10 - spawned, .acq_rel);
        // Acquire: pairs with each child's acq_rel decrement; their sums are visible after.
        while (me.pending.load(.acquire) > 0) coroutine.park() catch unreachable;
        result = me.sum.load(.monotonic);
    }
    // Monotonic: a child's `failed` store comes before its acq_rel decrement of `pending`,
    // which our acquire load of it above pairs with.
    const failed = me.failed.load(.monotonic);
    if (me.parent) |p| {
        // Monotonic: published to the parent by the acq_rel decrement of `pending` below, which
        // its acquire load pairs with.
        _ = p.sum.fetchAdd(result, .monotonic);
        if (failed) p.failed.store(true, .monotonic); // published by the decrement below
        // The parent's ref is read before the decrement: once `pending` can reach 0 the
        // parent may see it without parking, return, and its own parent end, freeing the
        // stack `p` lives on (it was read after the decrement, from memory maybe gone). `ref`
        // was set before this child was spawned; a stale one (the parent ended) unparks
        // nothing.
        const parent_ref = p.ref;
        // Acq_rel: publishes our sum to the parent; the last child wakes it.
        if (p.pending.fetchSub(1, .acq_rel) == 1) _ = s.unpark(parent_ref);
    } else if (me.out) |out| {
        // A short sum is no result: `done` stays as it was (the worker counts the root out
        // once it returns).
        if (failed) return;
        countedOut(); // the root, the spawned coroutine: `result` is its `done`
        out.store(result, .release);
    }
}

fn skynetRoot(arg: ?*anyopaque) callconv(.c) void {
    const c = cells(arg);
    // Monotonic: an argument cell (see `cells3`).
    var root: SkynetNode = .{ .index = 0, .size = c[0].load(.monotonic), .parent = null, .out = &c[1] };
    skynetNode(&root);
}

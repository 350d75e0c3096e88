//! Metrics pipes: every interval, a snapshot of one channel's counters is pushed into another
//! channel (a try-send: a full target skips that snapshot and counts it as failed-full there,
//! so a slow reader never blocks the pipe; a conflated target keeps only the latest).
//!
//! One thread serves every pipe of a `Pipes`, sleeping on a futex until the next one is due.
//! It starts with the first pipe and ends when the last one goes: a pipe ends when its target
//! is closed, when either channel is gone (its tick says so), or on `stop`. A thread that ends
//! by itself (no pipe left) detaches itself; `deinit` stops and joins one still serving, and
//! `reap` (the C ABI's final shutdown) ends the pipes whose channels are gone at once, not at
//! their next tick, and joins the thread if no pipe is left. No thread runs while no pipe
//! exists.
//!
//! Any thread may call `add`, `stop`, `activeCount` and `deinit` (the last one once, when no
//! other call can follow). Ticks run on the pipe thread with the `Pipes` lock released (one at a
//! time; `ticking` names it): a tick takes channel locks, which a stuck undelivered hook's caller
//! may hold for as long as the hook runs, and with the lock held across it, `reap` (the timed
//! shutdown's, bounded) and every other call waited for that hook too. Nobody but the thread
//! ends the pipe whose tick runs (its context is in use): `stop`, `reap` and `deinit` mark it
//! for the thread to end after the tick, and `stop` waits for that, except from inside that
//! tick or any channel's undelivered hook. A tick may call `add`, `stop` (its own pipe's is
//! marked, with no wait: a conflated target's undelivered hook, which the tick's send runs on
//! this thread, may stop the pipe) and `reap`, not `deinit`.
const std = @import("std");
const assert = std.debug.assert;
const Futex = std.Thread.Futex;
const channel = @import("channel.zig");
const scheduler = @import("../sched/scheduler.zig");
const test_wait = @import("../test_wait.zig");

pub const Pipes = struct {
    allocator: std.mem.Allocator,
    mutex: std.Thread.Mutex = .{},
    pipes: std.ArrayListUnmanaged(Pipe) = .empty,
    next_id: u32 = 1,
    /// Bumped under the lock on every change; the thread sleeps on it (futex) between ticks.
    seq: std.atomic.Value(u32) = .init(0),
    /// The pipe thread while it serves (`running`, under the lock), for `deinit` to join. A
    /// thread that finds no pipe left clears `running`, detaches itself and clears this, in
    /// one critical section, so that nobody joins it and its system resources go when it ends.
    /// Before, it stayed unjoined until the next `add` or `deinit`: for the C ABI's pipes,
    /// which are never deinit'd, until the process exited, keeping its stack and glibc's TLS
    /// block, which valgrind reported at exit as a lost `_dl_allocate_tls` block (288 or 304
    /// bytes). It cannot join itself, and no other thread is there to join it when it ends.
    thread: ?std.Thread = null,
    running: bool = false,
    stopping: bool = false,
    /// Which thread serves (under the lock): each is started with the value of its time, and
    /// `reap` moves it on when it takes that thread's handle to join it, so that the thread
    /// ends even if an `add` came meanwhile (which starts the next one).
    serving: u32 = 0,
    /// The id of the pipe whose tick runs now, with the lock released (0: none), under the lock.
    /// It stays listed meanwhile and only the thread ends it, after the tick.
    ticking: u32 = 0,
    /// `stop`, `reap` or `deinit` ended the pipe whose tick runs (under the lock): the thread
    /// ends it (its cleanup) once the tick returned.
    end_ticking: bool = false,
    /// `stop` calls asleep until the tick of the pipe they marked is over (under the lock):
    /// only then does the thread wake them (a system call) at a tick's end.
    stop_waiters: u32 = 0,
    /// Bumped under the lock at every tick's end; `stop` sleeps on it (futex) meanwhile.
    ticked: std.atomic.Value(u32) = .init(0),
    /// Ticks begun, bumped under the lock (for tests: with `ticked` equal, no tick runs, and
    /// one begun after a channel's lock was taken waits for it).
    begun: std.atomic.Value(u32) = .init(0),

    /// Pushes one snapshot; false ends the pipe (its target closed, a channel gone).
    pub const TickFn = *const fn (ctx: *anyopaque) bool;
    /// Frees a pipe's context when the pipe ends.
    pub const CleanupFn = *const fn (ctx: *anyopaque) void;

    const Pipe = struct {
        id: u32,
        tick: TickFn,
        cleanup: ?CleanupFn,
        ctx: *anyopaque,
        interval_ns: u64,
        due_ns: u64,
    };

    /// Shortest interval accepted (a shorter one would make the thread spin).
    pub const min_interval_ns: u64 = std.time.ns_per_ms;

    pub fn init(allocator: std.mem.Allocator) Pipes {
        return .{ .allocator = allocator };
    }

    /// Starts a pipe that calls `tick(ctx)` every `interval_ns` (the first time one interval
    /// from now); returns its id for `stop`. A tick that takes longer than its interval does not
    /// make up for the ticks it missed: the next comes one interval after it ended (`run`).
    /// `cleanup(ctx)` runs when the pipe ends, however it ends.
    pub fn add(p: *Pipes, tick: TickFn, cleanup: ?CleanupFn, ctx: *anyopaque, interval_ns: u64) error{ InvalidArgument, OutOfMemory, SystemResources }!u32 {
        if (interval_ns < min_interval_ns) return error.InvalidArgument;
        p.mutex.lock();
        defer p.mutex.unlock();
        assert(!p.stopping); // add after deinit
        const id = p.next_id;
        try p.pipes.append(p.allocator, .{
            .id = id,
            .tick = tick,
            .cleanup = cleanup,
            .ctx = ctx,
            .interval_ns = interval_ns,
            .due_ns = scheduler.monotonicNs() +| interval_ns, // saturating: a huge interval never ticks
        });
        if (!p.running) {
            assert(p.thread == null); // an ended thread detached itself, or `reap` joins it
            p.thread = std.Thread.spawn(.{ .stack_size = 64 * 1024 }, run, .{ p, p.serving }) catch {
                p.thread = null;
                _ = p.pipes.pop();
                return error.SystemResources;
            };
            p.running = true;
        }
        p.next_id +%= 1;
        if (p.next_id == 0) p.next_id = 1;
        p.bump();
        return id;
    }

    /// Ends the pipe `id`; false if no such pipe runs (it ended already, or never existed). If
    /// its tick runs, marks it for the thread to end at that tick's end and waits for that end
    /// (as long as the tick takes, as when ticks held the lock): when it returns, no tick of that
    /// pipe runs, nor will one again. From inside that very tick, or from any undelivered hook
    /// (whose caller holds a channel lock the tick may wait for), only marks it: waiting would
    /// be for itself. Before, such a stop took the lock the tick's thread held (ticks ran under
    /// it), or then waited for the tick: a deadlock; and a stop from another thread that waited
    /// without marking could find the pipe's next tick begun as it woke (due at once after a
    /// long tick) and wait again, for every tick of a pipe whose ticks run long.
    pub fn stop(p: *Pipes, id: u32) bool {
        p.mutex.lock();
        defer p.mutex.unlock();
        const i = p.indexOf(id) orelse return false;
        if (p.ticking != id) {
            p.end(i);
            p.bump();
            return true;
        }
        // Its tick runs: only the thread ends it (its context is in use). Marked already (by
        // another stop, a reap or, from this tick, a hook): ended already, as for a stop after
        // an `end`; this call still waits for the tick below, so that none runs once it returns.
        const first = !p.end_ticking;
        p.end_ticking = true;
        // Its own tick's thread: waiting would be for itself. Any channel's undelivered hook
        // (a conflated target's, which the tick's send runs on this thread, or one on another
        // thread): its caller holds that channel's lock, which the tick may wait for (the
        // source's snapshot, the send to the target), and a wait here would be for that caller:
        // a deadlock. Marked only, then: the tick in progress may still push its snapshot.
        if (in_tick_of == p or channel.Channel.inAnyHook()) return first;
        // The thread ends the marked pipe at the tick's end, in the critical section that moves
        // `ticked` on. Monotonic: `ticked` changes only under the lock, which orders it; the
        // futex wait compares it again in the kernel, so a tick's end after our unlock is not
        // missed (the thread wakes us: `stop_waiters`, under the lock).
        const seen = p.ticked.load(.monotonic);
        p.stop_waiters += 1;
        while (p.ticked.load(.monotonic) == seen) {
            p.mutex.unlock();
            Futex.wait(&p.ticked, seen);
            p.mutex.lock();
        }
        p.stop_waiters -= 1;
        assert(p.indexOf(id) == null); // ended by the thread, at that tick's end
        return first;
    }

    /// The `Pipes` whose tick this thread runs now (the pipe thread, inside a tick), for `stop`.
    threadlocal var in_tick_of: ?*Pipes = null;

    /// Under the lock: where the pipe `id` is listed.
    fn indexOf(p: *Pipes, id: u32) ?usize {
        for (p.pipes.items, 0..) |pipe, i| if (pipe.id == id) return i;
        return null;
    }

    pub fn activeCount(p: *Pipes) usize {
        p.mutex.lock();
        defer p.mutex.unlock();
        return p.pipes.items.len;
    }

    /// Whether the pipe `id` is listed (for tests: it runs, or its tick does and it ends after).
    pub fn listed(p: *Pipes, id: u32) bool {
        p.mutex.lock();
        defer p.mutex.unlock();
        return p.indexOf(id) != null;
    }

    /// Whether the pipe thread is serving (for tests: it ends when the last pipe does).
    pub fn threadRunning(p: *Pipes) bool {
        p.mutex.lock();
        defer p.mutex.unlock();
        return p.running;
    }

    /// Ends the pipes for which `alive(ctx)` is false now (their channels are gone: each would
    /// end at its next tick, which may come after the process exited), then, if no pipe is
    /// left, tells the thread to end and joins it; true if it joined one. A later `add` starts
    /// a thread again. Bounded (the timed shutdown's): the lock is never held across a tick,
    /// and a thread inside a tick (which may wait for a channel lock a stuck hook's caller
    /// holds) is not joined: its pipe, if `alive` is false for it, is marked for the thread to
    /// end after the tick, and the thread, finding no pipe left then, detaches itself. Before, the
    /// tick held the lock, and this waited for it, for good behind a stuck hook.
    pub fn reap(p: *Pipes, alive: *const fn (ctx: *anyopaque) bool) bool {
        const t = blk: {
            p.mutex.lock();
            defer p.mutex.unlock();
            assert(!p.stopping); // reap after deinit
            var i: usize = 0;
            while (i < p.pipes.items.len) {
                const pipe = p.pipes.items[i];
                if (alive(pipe.ctx)) {
                    i += 1;
                } else if (pipe.id == p.ticking) {
                    p.end_ticking = true; // its context is in use: the thread ends it
                    i += 1;
                } else p.end(i); // swapRemove moved another pipe to i
            }
            if (p.ticking != 0) return false; // not joined inside a tick (see above)
            if (p.pipes.items.len != 0 or !p.running) return false;
            // Serving, and no pipe left: it is about to end by itself. Its handle is ours to
            // join (it no longer detaches itself: `serving` moved on).
            const t = p.thread.?;
            p.thread = null;
            p.running = false;
            p.serving +%= 1;
            p.bump();
            break :blk t;
        };
        t.join();
        return true;
    }

    /// Ends every pipe and joins the thread if one still serves (one that ended detached itself).
    pub fn deinit(p: *Pipes) void {
        p.mutex.lock();
        p.stopping = true;
        var i: usize = 0;
        while (i < p.pipes.items.len) {
            if (p.pipes.items[i].id == p.ticking) {
                p.end_ticking = true; // the thread ends it after its tick, before it ends
                i += 1;
            } else p.end(i); // swapRemove moved another pipe to i
        }
        p.bump();
        const t = p.thread;
        p.thread = null;
        p.mutex.unlock();
        if (t) |thread| thread.join();
        assert(p.pipes.items.len == 0); // the one that ticked, ended by the thread
        p.pipes.deinit(p.allocator);
        p.* = undefined;
    }

    /// Under the lock.
    fn end(p: *Pipes, i: usize) void {
        const pipe = p.pipes.swapRemove(i);
        if (pipe.cleanup) |f| f(pipe.ctx);
    }

    /// Under the lock: tells the thread to look again.
    fn bump(p: *Pipes) void {
        // Release: pairs with the thread's acquire load before it sleeps, so a change made
        // under the lock is seen or the futex wait returns at once.
        _ = p.seq.fetchAdd(1, .release);
        Futex.wake(&p.seq, 1);
    }

    fn run(p: *Pipes, serving: u32) void {
        p.mutex.lock();
        while (!p.stopping and p.serving == serving and p.pipes.items.len > 0) {
            // The pipe due first (the earliest due time: one whose ticks take longer than its
            // interval does not starve the others).
            var first: usize = 0;
            for (p.pipes.items[1..], 1..) |pipe, i| {
                if (pipe.due_ns < p.pipes.items[first].due_ns) first = i;
            }
            const next = p.pipes.items[first].due_ns;
            const now = scheduler.monotonicNs();
            if (next <= now) {
                // Its tick, with the lock released (see the file header): the pipe stays
                // listed, and nobody else ends it meanwhile (`ticking`), so its copy's context
                // stays valid.
                const pipe = p.pipes.items[first];
                assert(p.ticking == 0 and !p.end_ticking);
                p.ticking = pipe.id;
                _ = p.begun.fetchAdd(1, .monotonic); // monotonic: a count for tests
                p.mutex.unlock();
                in_tick_of = p;
                const more = pipe.tick(pipe.ctx);
                in_tick_of = null;
                p.mutex.lock();
                p.ticking = 0;
                const i = p.indexOf(pipe.id).?; // listed still: only this thread ends it
                if (!more or p.end_ticking or p.stopping) {
                    p.end(i);
                } else {
                    // On time, the next tick keeps to the pipe's grid (one interval after this
                    // one was due, however long the tick took within it). A tick that ran past
                    // that next due time (stuck behind a hook's lock, or the thread late) drops
                    // the ticks it missed, as Go's Ticker drops those a slow reader missed: the
                    // next one comes a whole interval after this tick's end. Before, "behind"
                    // was judged by the time before the tick, so after one long tick the next
                    // was due already and ran at once: two snapshots back to back.
                    const q = &p.pipes.items[i];
                    const ended = scheduler.monotonicNs();
                    q.due_ns +|= q.interval_ns;
                    if (q.due_ns <= ended) q.due_ns = ended +| q.interval_ns;
                }
                p.end_ticking = false;
                // Monotonic: written and read under the lock (`stop`), which orders it; the
                // futex wait compares it again in the kernel.
                _ = p.ticked.fetchAdd(1, .monotonic);
                if (p.stop_waiters != 0) Futex.wake(&p.ticked, std.math.maxInt(u32));
                continue;
            }
            const seen = p.seq.load(.acquire); // pairs with `bump`
            p.mutex.unlock();
            const wait = next -| scheduler.monotonicNs();
            if (wait > 0) Futex.timedWait(&p.seq, seen, wait) catch {};
            p.mutex.lock();
        }
        if (p.serving == serving) {
            p.running = false;
            if (!p.stopping) {
                // Ended by itself: `add` spawned this thread and stored its handle under the
                // lock before this thread could take it, and only `deinit` (stopping) and
                // `reap` (which moved `serving` on) take it away.
                p.thread.?.detach();
                p.thread = null;
            }
        } // else `reap` joins it, and the state is a later thread's

        // After this unlock the thread touches `p` no more, so `deinit` (which finds no handle
        // once we detached) may free it at once, and no flag for it to wait on is needed:
        // - Every change above is made in this one critical section, so `deinit` and `reap`
        //   see either a thread serving (`running`, its handle theirs to join) or none that is
        //   theirs (detached, `thread` null): never a handle of a detached thread, nor no
        //   handle for one that still serves.
        // - `unlock`'s last access to `p` is its release swap of the lock word (Debug's
        //   `Mutex` clears its owner before it). What follows, when a locker waits (`deinit`,
        //   say), is a FUTEX_WAKE that only names the address: a private futex's key is the
        //   address, not the memory, and std's Linux `Futex.wake` ignores EFAULT. If the
        //   memory was freed and reused meanwhile, a waiter there wakes spuriously, which
        //   every futex wait must allow (std's `Futex.wait` says so; ours loop and check),
        //   just as for a pthread mutex destroyed at once after its unlock, which POSIX allows.
        // - Then the thread only returns: std.Thread's start routine frees its own argument
        //   block (its allocation, not ours) and the thread exits. The code it runs stays
        //   mapped: the C ABI pins the library before its first pipe (`pin_once`), and a Zig
        //   caller's code is its program's.
        // What remains is a thread on its way out: `reap`'s "none to join" (false) may come a
        // few microseconds before the OS has let it go, as for the clock ticker that detached
        // itself. That touches nothing of ours; only an exit at that very moment could show
        // its stack and TLS block as still there.
        p.mutex.unlock();
    }
};

/// A pipe between two channels the caller keeps alive until the pipe ends: `target` must have
/// elements of `Metrics.words` u64 words (`struct kc_chan_metrics`).
pub const ChannelPipe = struct {
    source: *channel.Channel,
    target: *channel.Channel,

    pub fn tick(ctx: *anyopaque) bool {
        const cp: *ChannelPipe = @ptrCast(@alignCast(ctx));
        return push(cp.source, cp.target);
    }
};

/// Pushes one snapshot of `source` into `target`; false once `target` is closed.
pub fn push(source: *channel.Channel, target: *channel.Channel) bool {
    assert(target.elem_size == channel.Metrics.words * 8);
    const w = source.snapshot().toWords();
    target.send(std.mem.sliceAsBytes(&w).ptr, null, true) catch |err| return switch (err) {
        error.WouldBlock => true, // full: this snapshot is skipped, the target counts it
        else => false,
    };
    return true;
}

const testing = std.testing;

test "a pipe pushes snapshots at its interval, ends when its target closes, and its thread ends with it" {
    var pipes = Pipes.init(testing.allocator);
    defer pipes.deinit();
    const source = try channel.Channel.create(testing.allocator, .{ .elem_size = 8, .capacity = 8 });
    defer source.destroy();
    const target = try channel.Channel.create(testing.allocator, .{ .elem_size = channel.Metrics.words * 8, .capacity = 4 });
    defer target.destroy();
    var cp: ChannelPipe = .{ .source = source, .target = target };
    try testing.expectError(error.InvalidArgument, pipes.add(ChannelPipe.tick, null, &cp, 1000));
    const id = try pipes.add(ChannelPipe.tick, null, &cp, 2 * std.time.ns_per_ms);
    try testing.expect(id != 0);
    var last_taken: u64 = 0;
    var last_sends: u64 = 0;
    for (1..4) |round| {
        var v: u64 = round;
        try source.send(std.mem.asBytes(&v), null, true);
        try source.receive(std.mem.asBytes(&v), null, true);
        // Snapshots taken before this send may still be queued (the pipe ticks on its own
        // clock, and a busy machine can delay this thread by several intervals): take them
        // until one shows this round's send. Each arrives within a bounded time (a deadline,
        // not a sleep), later than the one before, and never counts a send not yet made.
        const deadline = scheduler.monotonicNs() + 10 * std.time.ns_per_s;
        while (true) {
            var words: [channel.Metrics.words]u64 = undefined;
            try target.receive(std.mem.sliceAsBytes(&words).ptr, deadline, false);
            const m = channel.Metrics.fromWords(&words);
            try testing.expect(m.taken_ns > last_taken);
            try testing.expect(m.sends >= last_sends);
            try testing.expect(m.sends <= round);
            last_taken = m.taken_ns;
            last_sends = m.sends;
            if (m.sends == round) break;
        }
    }
    _ = target.close();
    // The pipe notices within an interval; the thread ends with the last pipe.
    const deadline = scheduler.monotonicNs() + 10 * std.time.ns_per_s;
    while (pipes.threadRunning() and scheduler.monotonicNs() < deadline) std.Thread.yield() catch {};
    try testing.expect(!pipes.threadRunning());
    // Detached by itself: nothing left for a later `add` or `deinit` to join (for the C ABI's
    // pipes, never deinit'd, it stayed unjoined until the process exited).
    {
        pipes.mutex.lock();
        defer pipes.mutex.unlock();
        try testing.expect(pipes.thread == null);
    }
    try testing.expectEqual(@as(usize, 0), pipes.activeCount());
    try testing.expect(!pipes.stop(id)); // ended already
}

test "stop ends a pipe and runs its cleanup; a new pipe restarts the thread" {
    var pipes = Pipes.init(testing.allocator);
    defer pipes.deinit();
    const S = struct {
        var ticks: std.atomic.Value(u32) = .init(0);
        var cleaned: u32 = 0;
        fn tick(_: *anyopaque) bool {
            _ = ticks.fetchAdd(1, .monotonic);
            return true;
        }
        fn cleanup(_: *anyopaque) void {
            cleaned += 1;
        }
    };
    var dummy: u8 = 0;
    const a = try pipes.add(S.tick, S.cleanup, &dummy, std.time.ns_per_ms);
    const deadline = scheduler.monotonicNs() + 10 * std.time.ns_per_s;
    while (S.ticks.load(.monotonic) < 3 and scheduler.monotonicNs() < deadline) std.Thread.yield() catch {};
    try testing.expect(S.ticks.load(.monotonic) >= 3);
    try testing.expect(pipes.stop(a));
    try testing.expectEqual(@as(u32, 1), S.cleaned);
    while (pipes.threadRunning() and scheduler.monotonicNs() < deadline) std.Thread.yield() catch {};
    try testing.expect(!pipes.threadRunning());
    try testing.expect(pipes.thread == null); // detached by itself (no other thread runs now)
    _ = try pipes.add(S.tick, S.cleanup, &dummy, std.time.ns_per_ms);
    try testing.expect(pipes.threadRunning());
    // deinit ends the last pipe (cleanup) and joins the thread.
}

test "a pipe with a huge interval never ticks (its due time saturates, it does not wrap)" {
    var pipes = Pipes.init(testing.allocator);
    defer pipes.deinit();
    const S = struct {
        var huge: std.atomic.Value(u32) = .init(0);
        var fast: std.atomic.Value(u32) = .init(0);
        fn tickHuge(_: *anyopaque) bool {
            _ = huge.fetchAdd(1, .monotonic);
            return true;
        }
        fn tickFast(_: *anyopaque) bool {
            _ = fast.fetchAdd(1, .monotonic);
            return true;
        }
    };
    var dummy: u8 = 0;
    _ = try pipes.add(S.tickHuge, null, &dummy, std.math.maxInt(u64));
    _ = try pipes.add(S.tickFast, null, &dummy, std.time.ns_per_ms);
    // The thread has gone round at least 20 times (the fast pipe's ticks), bounded in time.
    const deadline = scheduler.monotonicNs() + 10 * std.time.ns_per_s;
    while (S.fast.load(.monotonic) < 20 and scheduler.monotonicNs() < deadline) std.Thread.yield() catch {};
    try testing.expect(S.fast.load(.monotonic) >= 20);
    try testing.expectEqual(@as(u32, 0), S.huge.load(.monotonic));
}

test "reap ends the pipes whose channels are gone at once and joins the thread once none is left; a later add starts one again" {
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    var pipes = Pipes.init(testing.allocator);
    defer pipes.deinit();
    const S = struct {
        var cleaned: u32 = 0;
        fn tick(_: *anyopaque) bool {
            return true;
        }
        fn cleanup(_: *anyopaque) void {
            cleaned += 1;
        }
        /// A pipe's context: a byte that says whether its channels are still there.
        fn alive(ctx: *anyopaque) bool {
            const b: *u8 = @ptrCast(ctx);
            return b.* != 0;
        }
    };
    var live: u8 = 1;
    var gone: u8 = 0;
    const hour = 3600 * std.time.ns_per_s; // no tick would end them before the test does
    _ = try pipes.add(S.tick, S.cleanup, &live, hour);
    _ = try pipes.add(S.tick, S.cleanup, &gone, hour);
    // One pipe lives on: the thread serves it.
    try testing.expect(!pipes.reap(S.alive));
    try testing.expectEqual(@as(u32, 1), S.cleaned);
    try testing.expectEqual(@as(usize, 1), pipes.activeCount());
    try testing.expect(pipes.threadRunning());
    // None left: joined before it returns.
    live = 0;
    try testing.expect(pipes.reap(S.alive));
    try testing.expectEqual(@as(u32, 2), S.cleaned);
    try testing.expect(!pipes.threadRunning());
    try testing.expect(pipes.thread == null);
    try testing.expect(!pipes.reap(S.alive)); // nothing to join
    // A pipe added at once gets a thread of its own, which reap does not take while it serves.
    live = 1;
    const id = try pipes.add(S.tick, S.cleanup, &live, hour);
    try testing.expect(pipes.threadRunning());
    try testing.expect(!pipes.reap(S.alive));
    try testing.expect(pipes.stop(id));
    // The thread, finding no pipe, ends by itself and detaches itself.
    const deadline = scheduler.monotonicNs() + 10 * std.time.ns_per_s;
    while (pipes.threadRunning() and scheduler.monotonicNs() < deadline) std.Thread.yield() catch {};
    try testing.expect(!pipes.threadRunning());
    try testing.expect(!pipes.reap(S.alive));
    // A reap racing an add: whichever comes first, the added pipe is served and no thread is
    // joined while it serves one (seeded rounds, bounded).
    var prng_state = std.Random.DefaultPrng.init(0x25C3);
    const prng = prng_state.random();
    S.cleaned = 0;
    for (0..200) |_| {
        gone = 0;
        _ = try pipes.add(S.tick, S.cleanup, &gone, hour);
        const Reaper = struct {
            fn go(ps: *Pipes, spin: u32, j: *test_wait.Joiner) void {
                defer j.done();
                for (0..spin) |_| std.atomic.spinLoopHint();
                _ = ps.reap(S.alive);
            }
        };
        // Bounded: a reap that joins a thread serving the added pipe waits for good (it did
        // without the serving check); this fails the run within seconds instead of hanging it.
        var j: test_wait.Joiner = .{};
        const t = try std.Thread.spawn(.{}, Reaper.go, .{ &pipes, prng.uintLessThan(u32, 2000), &j });
        for (0..prng.uintLessThan(u32, 2000)) |_| std.atomic.spinLoopHint();
        const a = try pipes.add(S.tick, S.cleanup, &live, hour);
        j.join(t, 10 * std.time.ns_per_s, "a reap racing an add (its join of the pipe thread)");
        try testing.expect(pipes.threadRunning()); // the live pipe is served
        try testing.expect(pipes.stop(a));
    }
    try testing.expectEqual(@as(u32, 400), S.cleaned);
}

test "reap and stop do not wait for a tick held up (a channel lock a stuck hook's caller holds): reap is bounded, the pipe ends after its tick, and the thread detaches itself" {
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    var pipes = Pipes.init(testing.allocator);
    defer pipes.deinit();
    const S = struct {
        var gate = std.atomic.Value(bool).init(false);
        var inside = std.atomic.Value(bool).init(false);
        var cleaned = std.atomic.Value(u32).init(0);
        var ticks = std.atomic.Value(u32).init(0);
        /// The held-up tick: as a tick waiting for a channel lock a stuck hook holds.
        fn stuck(_: *anyopaque) bool {
            inside.store(true, .release); // pairs with the test's acquire load
            const g = test_wait.Deadline.in(test_wait.default_ns, "the tick's gate");
            // Acquire: pairs with the test's release store.
            while (!gate.load(.acquire)) g.wait() catch break;
            return true;
        }
        fn quick(_: *anyopaque) bool {
            _ = ticks.fetchAdd(1, .monotonic);
            return true;
        }
        fn cleanup(_: *anyopaque) void {
            _ = cleaned.fetchAdd(1, .monotonic);
        }
        fn alive(ctx: *anyopaque) bool {
            const b: *u8 = @ptrCast(ctx);
            return b.* != 0;
        }
        fn reaper(ps: *Pipes, j: *test_wait.Joiner, out: *bool) void {
            defer j.done();
            out.* = ps.reap(alive);
        }
    };
    var gone: u8 = 0;
    // Opened on every way out, so that the tick returns and `deinit` joins the thread.
    defer S.gate.store(true, .release);
    _ = try pipes.add(S.stuck, S.cleanup, &gone, std.time.ns_per_ms);
    const d = test_wait.Deadline.in(test_wait.default_ns, "the stuck tick");
    while (!S.inside.load(.acquire)) try d.wait();
    // Other calls go on meanwhile: another pipe is added (not ticked: the one thread is held).
    var live: u8 = 1;
    const other = try pipes.add(S.quick, S.cleanup, &live, std.time.ns_per_ms);
    try testing.expectEqual(@as(usize, 2), pipes.activeCount());
    // The pipe whose tick runs is gone (`alive` false): reap does not wait for the tick (before,
    // the tick held the lock reap takes: a hang), nor end it under the tick; it is marked.
    var joined = true;
    var j: test_wait.Joiner = .{};
    const t = try std.Thread.spawn(.{}, S.reaper, .{ &pipes, &j, &joined });
    const r = test_wait.Deadline.in(2 * std.time.ns_per_s, "a reap while a tick is held up");
    // Acquire: pairs with `done`.
    while (!j.finished.load(.acquire) and !r.passed()) std.Thread.yield() catch {};
    const in_time = j.finished.load(.acquire);
    if (!in_time) S.gate.store(true, .release); // the reap goes on: a failure, not a hang
    j.join(t, test_wait.default_ns, "a reap while a tick is held up");
    try testing.expect(in_time);
    try testing.expect(!joined); // a thread inside a tick is not joined
    try testing.expectEqual(@as(u32, 0), S.cleaned.load(.monotonic)); // its context in use
    try testing.expect(pipes.stop(other)); // not ticking: ended at once
    try testing.expectEqual(@as(u32, 1), S.cleaned.load(.monotonic));
    // The tick returns: the thread ends the marked pipe, finds none left, detaches itself.
    S.gate.store(true, .release);
    const e = test_wait.Deadline.in(test_wait.default_ns, "the thread's end after the tick");
    while (pipes.threadRunning()) try e.wait();
    try testing.expectEqual(@as(u32, 2), S.cleaned.load(.monotonic));
    try testing.expectEqual(@as(usize, 0), pipes.activeCount());
    {
        pipes.mutex.lock();
        defer pipes.mutex.unlock();
        try testing.expect(pipes.thread == null); // detached by itself
    }
    // A stop of a pipe whose tick runs waits for that tick, then ends it: no tick after it.
    S.inside.store(false, .monotonic); // monotonic: the pipe thread starts after it
    S.gate.store(false, .monotonic);
    gone = 1;
    const held = try pipes.add(S.stuck, S.cleanup, &gone, std.time.ns_per_ms);
    const d2 = test_wait.Deadline.in(test_wait.default_ns, "the stuck tick");
    while (!S.inside.load(.acquire)) try d2.wait();
    const Stopper = struct {
        fn go(ps: *Pipes, id: u32, jj: *test_wait.Joiner, out: *bool) void {
            defer jj.done();
            out.* = ps.stop(id);
        }
    };
    var stopped = false;
    var js: test_wait.Joiner = .{};
    const ts = try std.Thread.spawn(.{}, Stopper.go, .{ &pipes, held, &js, &stopped });
    // It waits for the tick: not done until the gate opens (bounded look: the tick is held).
    for (0..1000) |_| {
        try testing.expect(!js.finished.load(.acquire));
        std.Thread.yield() catch {};
    }
    S.gate.store(true, .release);
    js.join(ts, test_wait.default_ns, "a stop waiting for its pipe's tick");
    try testing.expect(stopped);
    try testing.expectEqual(@as(u32, 3), S.cleaned.load(.monotonic));
    try testing.expectEqual(@as(usize, 0), pipes.activeCount());
}

test "deinit while a pipe's tick runs: the thread ends that pipe after its tick, its context untouched until then, and deinit returns once it did" {
    // `deinit` marks the pipe whose tick runs instead of ending it (its cleanup would free the
    // context under the tick, and the thread would then not find the pipe it ticked).
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    const S = struct {
        var gate = std.atomic.Value(bool).init(false);
        var inside = std.atomic.Value(bool).init(false);
        var cleaned = std.atomic.Value(u32).init(0);
        /// The tick found its context cleaned up (ended under it).
        var early = std.atomic.Value(bool).init(false);
        fn stuck(ctx: *anyopaque) bool {
            inside.store(true, .release); // pairs with the test's acquire load
            const g = test_wait.Deadline.in(test_wait.default_ns, "the tick's gate");
            // Acquire: pairs with the opener's release store.
            while (!gate.load(.acquire)) g.wait() catch break;
            // Its own context, cleaned up (`cleanup` marks it) while it ran: ended under it.
            // Acquire: pairs with `cleanup`'s release store.
            const mark: *std.atomic.Value(u8) = @ptrCast(ctx);
            if (mark.load(.acquire) != 0) early.store(true, .monotonic);
            return true;
        }
        fn idle(_: *anyopaque) bool {
            return true;
        }
        fn cleanup(ctx: *anyopaque) void {
            const mark: *std.atomic.Value(u8) = @ptrCast(ctx);
            mark.store(1, .release); // pairs with the tick's acquire load
            _ = cleaned.fetchAdd(1, .monotonic);
        }
        /// Opens the gate once `deinit` began (`stopping`, under the lock). `deinit` cannot
        /// return before (it joins the thread, which waits here), so `ps` is valid meanwhile.
        fn opener(ps: *Pipes, j: *test_wait.Joiner) void {
            defer j.done();
            const d = test_wait.Deadline.in(test_wait.default_ns, "deinit's start");
            while (true) {
                ps.mutex.lock();
                const began = ps.stopping;
                ps.mutex.unlock();
                if (began) break;
                d.wait() catch break;
            }
            gate.store(true, .release); // pairs with the tick's acquire load
        }
    };
    var pipes = Pipes.init(testing.allocator);
    var ticked_ctx = std.atomic.Value(u8).init(0);
    var idle_ctx = std.atomic.Value(u8).init(0);
    _ = try pipes.add(S.stuck, S.cleanup, &ticked_ctx, std.time.ns_per_ms);
    _ = try pipes.add(S.idle, S.cleanup, &idle_ctx, 3600 * std.time.ns_per_s); // ended by deinit
    const d = test_wait.Deadline.in(test_wait.default_ns, "the stuck tick");
    while (!S.inside.load(.acquire)) try d.wait();
    var j: test_wait.Joiner = .{};
    const t = try std.Thread.spawn(.{}, S.opener, .{ &pipes, &j });
    pipes.deinit(); // the other pipe at once; the ticking one by the thread, after its tick
    j.join(t, test_wait.default_ns, "the gate's opener");
    try testing.expect(!S.early.load(.monotonic));
    try testing.expectEqual(@as(u32, 2), S.cleaned.load(.monotonic));
}

test "pipes whose ticks take longer than their interval do not starve the others: the one due first ticks next" {
    // One tick at a time, with the lock released: the thread picks the pipe due earliest. A
    // slow pipe was due again as soon as its tick returned; picked first (as by list order),
    // it held the thread for good and the other pipes never ticked. Since session 44 a slow
    // pipe is due an interval after its tick's end, so one slow pipe no longer shows it: two
    // do, listed first and taking turns (each is due again while the other ticks), which list
    // order would pick for good, the fast pipe listed third never ticking.
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    var pipes = Pipes.init(testing.allocator);
    defer pipes.deinit();
    const S = struct {
        var slow = [2]std.atomic.Value(u32){ .init(0), .init(0) };
        var fast = std.atomic.Value(u32).init(0);
        /// Longer than its interval (1 ms): busy for 3 ms of the clock, not a wait for anything.
        fn tickSlow(ctx: *anyopaque) bool {
            const which: *const u8 = @ptrCast(ctx);
            _ = slow[which.*].fetchAdd(1, .monotonic);
            const end = scheduler.monotonicNs() + 3 * std.time.ns_per_ms;
            while (scheduler.monotonicNs() < end) std.atomic.spinLoopHint();
            return true;
        }
        fn tickFast(_: *anyopaque) bool {
            _ = fast.fetchAdd(1, .monotonic);
            return true;
        }
    };
    var ids: [2]u8 = .{ 0, 1 };
    var ctx: u8 = 0;
    // The slow ones listed first, due first: list order would always pick one of them.
    _ = try pipes.add(S.tickSlow, null, &ids[0], std.time.ns_per_ms);
    _ = try pipes.add(S.tickSlow, null, &ids[1], std.time.ns_per_ms);
    _ = try pipes.add(S.tickFast, null, &ctx, std.time.ns_per_ms);
    // All go on ticking (bounded in time): the fast one at least about once per slow tick.
    const d = test_wait.Deadline.in(test_wait.default_ns, "the fast pipe's ticks");
    while (S.fast.load(.monotonic) < 20) try d.wait();
    try testing.expect(S.slow[0].load(.monotonic) >= 5);
    try testing.expect(S.slow[1].load(.monotonic) >= 5);
}

test "after a tick that ran past its next due time, the next tick comes a whole interval after that tick's end, not at once" {
    // A pipe's next tick was judged due by the time before its tick: after a tick held for
    // several intervals, the next (due one interval after the held one) ran as soon as it
    // returned, two snapshots back to back. Now the ticks it missed are dropped, and the next
    // begins an interval after its end. The first tick holds for three intervals of the clock
    // (a wait for the clock itself, the behaviour under test); each tick records its times.
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    var pipes = Pipes.init(testing.allocator);
    defer pipes.deinit();
    const interval = 20 * std.time.ns_per_ms;
    const S = struct {
        var count = std.atomic.Value(u32).init(0);
        var began: [3]u64 = @splat(0);
        var ended: [3]u64 = @splat(0);
        fn tick(_: *anyopaque) bool {
            const n = count.load(.monotonic);
            if (n >= began.len) return true;
            began[n] = scheduler.monotonicNs();
            if (n == 0) {
                const d = test_wait.Deadline.in(3 * interval, "");
                while (!d.passed()) std.Thread.yield() catch {};
            }
            ended[n] = scheduler.monotonicNs();
            // Release: publishes the times; pairs with the test's acquire load.
            count.store(n + 1, .release);
            return true;
        }
    };
    S.count.store(0, .monotonic);
    var ctx: u8 = 0;
    _ = try pipes.add(S.tick, null, &ctx, interval);
    const d = test_wait.Deadline.in(test_wait.default_ns, "three ticks");
    while (S.count.load(.acquire) < 3) try d.wait();
    try testing.expect(S.ended[0] - S.began[0] >= 3 * interval); // held past two due times
    // The next tick an interval after the held one's end (it was due at once before).
    try testing.expect(S.began[1] >= S.ended[0] + interval);
    // And the one after it on the new grid: due an interval after the second was.
    try testing.expect(S.began[2] >= S.ended[0] + 2 * interval);
}

test "a stop that waits for its pipe's tick ends the pipe at that tick's end: no next tick begins, even one due at once" {
    // A tick held past its interval left its pipe due again as it returned, and the thread,
    // which holds the lock from the tick's end to the next tick's start, began that next tick
    // before the woken stop could take the lock: the stop waited again, for as long as every
    // tick of a pipe whose ticks run long (behind a slow hook each time) and did not come to
    // its end. Now the stop marks the pipe, which the thread ends at the tick's end. Since
    // session 44 such a pipe's next tick comes an interval after the held one's end, not at
    // once, so an unmarked stop loses that race only where its thread wakes more than that
    // interval (1 ms here) late: the test also asks who ended the pipe. The pipe thread, in
    // the critical section that ends the tick (the cleanup runs there, on the thread that ran
    // the tick); an unmarked stop ended it itself once awake (the cleanup on the stop's thread).
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    var pipes = Pipes.init(testing.allocator);
    defer pipes.deinit();
    const S = struct {
        var first_gate = std.atomic.Value(bool).init(false);
        var next_gate = std.atomic.Value(bool).init(false);
        var entered = std.atomic.Value(u32).init(0);
        /// The thread that ran the first tick, and the one the pipe's cleanup ran on (0: not
        /// yet); each written before a release (`entered`, the stop's `done`) that the test's
        /// acquire load sees.
        var tick_thread: std.Thread.Id = 0;
        var cleanup_thread: std.Thread.Id = 0;
        var cleanups = std.atomic.Value(u32).init(0);
        /// Each tick waits for a gate: the first tick for `first_gate`, any later one for
        /// `next_gate` (a tick after the stop's wait began: the test sees it, then lets it go).
        fn held(_: *anyopaque) bool {
            if (entered.load(.monotonic) == 0) tick_thread = std.Thread.getCurrentId();
            // Release: pairs with the test's acquire loads.
            const n = entered.fetchAdd(1, .release) + 1;
            const gate = if (n == 1) &first_gate else &next_gate;
            const g = test_wait.Deadline.in(test_wait.default_ns, "the tick's gate");
            // Acquire: pairs with the test's release stores.
            while (!gate.load(.acquire)) g.wait() catch break;
            return true;
        }
        /// Runs once, under the pipes' lock, on the thread that ends the pipe.
        fn cleanup(_: *anyopaque) void {
            cleanup_thread = std.Thread.getCurrentId();
            // Release: publishes `cleanup_thread`; pairs with the test's acquire load.
            _ = cleanups.fetchAdd(1, .release);
        }
        fn stopper(ps: *Pipes, id: u32, j: *test_wait.Joiner, out: *bool) void {
            defer j.done();
            out.* = ps.stop(id);
        }
    };
    S.entered.store(0, .monotonic);
    S.cleanups.store(0, .monotonic);
    // Opened on every way out, so that a held tick returns and `deinit` joins the thread.
    defer {
        S.first_gate.store(true, .release);
        S.next_gate.store(true, .release);
    }
    var ctx: u8 = 0;
    const interval = std.time.ns_per_ms;
    const id = try pipes.add(S.held, S.cleanup, &ctx, interval);
    const d = test_wait.Deadline.in(test_wait.default_ns, "the first tick");
    while (S.entered.load(.acquire) == 0) try d.wait();
    // Held past its next due time (at most an interval after the tick began): due again an
    // interval after it returns. A wait for the clock, not for another thread.
    const began = scheduler.monotonicNs();
    while (scheduler.monotonicNs() < began + 2 * interval) try d.wait();
    var stopped = false;
    var j: test_wait.Joiner = .{};
    const t = try std.Thread.spawn(.{}, S.stopper, .{ &pipes, id, &j, &stopped });
    // Until the stop waits for the tick.
    const w = test_wait.Deadline.in(test_wait.default_ns, "the stop's wait for the tick");
    while (true) {
        pipes.mutex.lock();
        const waiting = pipes.stop_waiters;
        pipes.mutex.unlock();
        if (waiting != 0) break;
        try w.wait();
    }
    S.first_gate.store(true, .release);
    // The stop returns, or (the failure) a next tick of its pipe begins: whichever first.
    // Acquire: pairs with `done` and with the tick's release increment.
    const r = test_wait.Deadline.in(test_wait.default_ns, "the stop's return after the tick");
    while (!j.finished.load(.acquire) and S.entered.load(.acquire) == 1) try r.wait();
    S.next_gate.store(true, .release); // such a next tick returns, and the stop with it
    j.join(t, test_wait.default_ns, "a stop waiting for its pipe's tick");
    try testing.expect(stopped);
    try testing.expectEqual(@as(u32, 1), S.entered.load(.acquire));
    try testing.expect(!pipes.listed(id));
    // Ended by the pipe thread at the tick's end (the cleanup ran there), not by the stop
    // once it woke: deterministic, where the count above needs a late wake to fail.
    try testing.expectEqual(@as(u32, 1), S.cleanups.load(.acquire));
    try testing.expectEqual(S.tick_thread, S.cleanup_thread);
}

test "two stops racing for a pipe whose tick runs: both wait for that tick's end, one (the one that marked it) returns true, the other false, and its cleanup runs once" {
    // kc_chan_pipe_stop's contract: 0 for the stop that ended the pipe, KC_EBADH for one that
    // found it ended already, which a stop that finds the pipe marked (by another stop) is:
    // both return only once the tick is over, and only the marking one says it ended it.
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    var pipes = Pipes.init(testing.allocator);
    defer pipes.deinit();
    const S = struct {
        var gate = std.atomic.Value(bool).init(false);
        var entered = std.atomic.Value(u32).init(0);
        var cleaned = std.atomic.Value(u32).init(0);
        fn held(_: *anyopaque) bool {
            _ = entered.fetchAdd(1, .release); // pairs with the test's acquire loads
            const g = test_wait.Deadline.in(test_wait.default_ns, "the tick's gate");
            // Acquire: pairs with the test's release store.
            while (!gate.load(.acquire)) g.wait() catch break;
            return true;
        }
        fn cleanup(_: *anyopaque) void {
            _ = cleaned.fetchAdd(1, .monotonic);
        }
        fn stopper(ps: *Pipes, id: u32, j: *test_wait.Joiner, out: *bool) void {
            defer j.done();
            out.* = ps.stop(id);
        }
    };
    // Opened on every way out, so that the held tick returns and `deinit` joins the thread.
    defer S.gate.store(true, .release);
    var ctx: u8 = 0;
    const id = try pipes.add(S.held, S.cleanup, &ctx, std.time.ns_per_ms);
    const d = test_wait.Deadline.in(test_wait.default_ns, "the first tick");
    while (S.entered.load(.acquire) == 0) try d.wait();
    var out: [2]bool = .{ false, false };
    var js: [2]test_wait.Joiner = .{ .{}, .{} };
    var ts: [2]std.Thread = undefined;
    for (0..2) |k| ts[k] = try std.Thread.spawn(.{}, S.stopper, .{ &pipes, id, &js[k], &out[k] });
    // Until both wait for the tick.
    const w = test_wait.Deadline.in(test_wait.default_ns, "both stops' wait for the tick");
    while (true) {
        pipes.mutex.lock();
        const waiting = pipes.stop_waiters;
        pipes.mutex.unlock();
        if (waiting == 2) break;
        try w.wait();
    }
    // Neither returned while the tick runs; its context is untouched.
    // Acquire: pairs with `done`.
    for (&js) |*j| try testing.expect(!j.finished.load(.acquire));
    try testing.expectEqual(@as(u32, 0), S.cleaned.load(.monotonic));
    S.gate.store(true, .release);
    for (0..2) |k| js[k].join(ts[k], test_wait.default_ns, "a stop waiting for its pipe's tick");
    try testing.expect(out[0] != out[1]); // one true, one false
    try testing.expectEqual(@as(u32, 1), S.cleaned.load(.monotonic));
    try testing.expectEqual(@as(u32, 1), S.entered.load(.acquire)); // no tick after it
    try testing.expect(!pipes.listed(id));
    try testing.expect(!pipes.stop(id)); // ended already
}

//! A worker's local run queue: a bounded Chase-Lev deque of pointers. The owning worker pushes
//! and pops at the bottom (LIFO: the coroutine spawned last runs first, so a tree of spawns is
//! explored depth-first and stays small); thieves take from the top (the oldest entries, which
//! for divide-and-conquer work are the biggest pieces). `stealHalf` moves half of a victim's
//! entries one CAS at a time: a single CAS over a batch could race the owner's pops at the
//! bottom, one entry per CAS cannot (the classic Chase-Lev argument).
//!
//! `push` and `pop` only on the owner thread; `steal`, `stealHalf` (into a deque the caller
//! owns) and `len` on any thread. Capacity is a power of two fixed at compile time, so tests can
//! shrink it and make the full/wrap-around races show. Size: capacity * 8 bytes + two lines.
const std = @import("std");
const builtin = @import("builtin");
const test_wait = @import("../test_wait.zig");
const assert = std.debug.assert;

pub fn Deque(comptime T: type, comptime capacity: u32) type {
    comptime assert(std.math.isPowerOfTwo(capacity));
    return struct {
        const Self = @This();
        const mask = capacity - 1;

        /// Tests: code run at fixed points of the race for the last item, to make its window
        /// certain. Pinned to one CPU the stress test below almost never meets it: it passed 5
        /// runs in 5 so with `pop`'s CAS replaced by a plain store (and failed 4 in 5 on two).
        pub var test_hooks: if (builtin.is_test) struct {
            /// In `steal`, between its read of the slot and its CAS of `top`.
            steal_before_cas: ?*const fn () void = null,
            /// In `pop`, taking the last item: between its read of `top` and its CAS.
            pop_before_cas: ?*const fn () void = null,
        } else struct {} = .{};

        /// Next index to consume. Advanced by CAS (acq_rel: the winner's read of the slot
        /// happens before the owner may overwrite it, which the owner learns by acquiring `top`).
        top: std.atomic.Value(u32) align(std.atomic.cache_line) = .init(0),
        /// Next index to fill; written by the owner only.
        bottom: std.atomic.Value(u32) align(std.atomic.cache_line) = .init(0),
        slots: [capacity]std.atomic.Value(?*T) = @splat(.init(null)),

        /// Owner only. Returns false (and leaves the queue unchanged) when it is full.
        pub fn push(q: *Self, item: *T) bool {
            const b = q.bottom.load(.monotonic); // only we write it
            // Acquire: pairs with the seq_cst CAS of `top` in `steal`; a slot is free again only
            // after the thief that took it has read it.
            const t = q.top.load(.acquire);
            assert(b -% t <= capacity);
            if (b -% t == capacity) return false;
            q.slots[b & mask].store(item, .monotonic);
            // Seq_cst: publishes the slot (release, pairs with the thieves' acquire of `bottom`)
            // and orders this push before the scheduler's later load of its sleeper count (the
            // idle protocol's Dekker pair). A swap, not a store: a read-modify-write is a full
            // barrier everywhere, including under qemu-user on an x86 host, which does not keep
            // AArch64's store-release/load-acquire order for a plain seq_cst store (this lost
            // items in the stress test below). On x86 a seq_cst store is an xchg anyway.
            _ = q.bottom.swap(b +% 1, .seq_cst);
            return true;
        }

        /// Owner only: takes the newest item, or null if the queue is empty.
        pub fn pop(q: *Self) ?*T {
            const b = q.bottom.load(.monotonic) -% 1;
            // Seq_cst store then seq_cst load: pairs with the thieves' seq_cst load of `bottom`
            // after their load of `top`; either a thief sees the smaller bottom, or we see its
            // CAS of top (Chase-Lev). A swap for the store, for the reason given in `push`.
            _ = q.bottom.swap(b, .seq_cst);
            const t = q.top.load(.seq_cst);
            const n: i32 = @bitCast(b -% t);
            if (n < 0) {
                // Empty: undo. Release, not monotonic: a thief that reads this value must also
                // see the slots below it (a relaxed store would not carry the earlier pushes'
                // publication on a weakly ordered CPU).
                q.bottom.store(b +% 1, .release);
                return null;
            }
            const item = q.slots[b & mask].load(.monotonic);
            if (n > 0) return item.?; // more than one left: no thief can reach this slot
            // The last item: race the thieves for it with the same CAS they use.
            if (builtin.is_test) if (test_hooks.pop_before_cas) |f| f();
            const won = q.top.cmpxchgStrong(t, t +% 1, .seq_cst, .monotonic) == null;
            q.bottom.store(b +% 1, .release); // release: as for the undo above

            return if (won) item.? else null;
        }

        /// Any thread: takes the oldest item, or null if the queue is empty or the race was lost.
        pub fn steal(q: *Self) ?*T {
            while (true) {
                // Acquire + seq_cst: pairs with the owner's seq_cst store of `bottom` in `pop`
                // (and its release in `push`, so the slot is initialised).
                const t = q.top.load(.seq_cst);
                const b = q.bottom.load(.seq_cst);
                const n: i32 = @bitCast(b -% t);
                if (n <= 0) return null;
                const item = q.slots[t & mask].load(.monotonic);
                if (builtin.is_test) if (test_hooks.steal_before_cas) |f| f();
                // Seq_cst: the CAS the owner's last-item pop races against.
                if (q.top.cmpxchgWeak(t, t +% 1, .seq_cst, .monotonic) == null) return item.?;
            }
        }

        /// Any thread: moves up to half of `victim`'s items into `q` (which the caller must own)
        /// and returns one more to run now. Null if the victim was empty.
        pub fn stealHalf(q: *Self, victim: *Self) ?*T {
            const first = victim.steal() orelse return null;
            var more = victim.len() / 2;
            // Fill our slots above `bottom` and publish them with one swap at the end, not one
            // per item: other thieves read only below the published `bottom`, and nobody else
            // writes our slots.
            const b = q.bottom.load(.monotonic); // only we write it
            const t = q.top.load(.acquire); // as in `push`: slots below it are free again
            assert(b -% t <= capacity);
            var n: u32 = 0;
            while (more > 0 and b -% t +% n < capacity) : (more -= 1) {
                const item = victim.steal() orelse break;
                q.slots[(b +% n) & mask].store(item, .monotonic);
                n += 1;
            }
            // Seq_cst swap: publishes the slots, as in `push` (and for the same reasons).
            if (n > 0) _ = q.bottom.swap(b +% n, .seq_cst);
            return first;
        }

        /// Approximate number of items (exact when called by the owner with no thieves).
        /// Seq_cst loads: an idle worker's look for work is the load half of a Dekker pair
        /// with `push`'s seq_cst store (see sched/scheduler.zig, `Worker.idle`).
        pub fn len(q: *const Self) u32 {
            const b = q.bottom.load(.seq_cst);
            const t = q.top.load(.seq_cst);
            const n: i32 = @bitCast(b -% t);
            return if (n <= 0) 0 else @intCast(@min(n, capacity));
        }
    };
}

const testing = std.testing;

test "owner pops LIFO, thieves steal FIFO; full and empty" {
    var q: Deque(u32, 4) = .{};
    var vals = [_]u32{ 1, 2, 3, 4, 5 };
    try testing.expect(q.pop() == null);
    try testing.expect(q.steal() == null);
    for (vals[0..4]) |*v| try testing.expect(q.push(v));
    try testing.expect(!q.push(&vals[4])); // full
    try testing.expectEqual(@as(u32, 4), q.pop().?.*); // newest
    try testing.expectEqual(@as(u32, 1), q.steal().?.*); // oldest
    try testing.expect(q.push(&vals[4])); // wraps around
    try testing.expectEqual(@as(u32, 5), q.pop().?.*);
    try testing.expectEqual(@as(u32, 3), q.pop().?.*);
    try testing.expectEqual(@as(u32, 2), q.pop().?.*);
    try testing.expect(q.pop() == null);
    try testing.expectEqual(@as(u32, 0), q.len());
}

test "stealHalf moves half and returns one" {
    var a: Deque(u32, 8) = .{};
    var b: Deque(u32, 8) = .{};
    var vals: [6]u32 = .{ 0, 1, 2, 3, 4, 5 };
    for (&vals) |*v| try testing.expect(a.push(v));
    const got = b.stealHalf(&a).?;
    try testing.expectEqual(@as(u32, 0), got.*); // the oldest
    try testing.expectEqual(@as(u32, 2), b.len()); // 1 and 2
    try testing.expectEqual(@as(u32, 3), a.len());
    try testing.expectEqual(@as(u32, 2), b.pop().?.*);
    try testing.expectEqual(@as(u32, 5), a.pop().?.*);
}

test "the last item raced by the owner's pop and a thief's steal goes to exactly one of them" {
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    // Both orders, made certain by the hooks (the stress test below leaves them to chance,
    // which one CPU hardly ever gives): the thief has read the slot and stops before its CAS;
    // then the owner's pop either stops before its own CAS while the thief's lands (the thief
    // wins), or runs to its end (the owner wins). Each side must learn from its CAS who won.
    const Q = Deque(u32, 4);
    const S = struct {
        var q: Q = .{};
        var thief_waiting: std.atomic.Value(bool) = .init(false);
        var thief_go: std.atomic.Value(bool) = .init(false);
        var thief_done: std.atomic.Value(bool) = .init(false);
        var stolen: ?*u32 = null;

        fn waitFor(flag: *std.atomic.Value(bool)) void {
            const deadline = std.time.nanoTimestamp() + 20 * std.time.ns_per_s;
            // Acquire: pairs with the release store that set the flag (what the other thread
            // did before it is seen, `stolen` included).
            while (!flag.load(.acquire)) {
                if (std.time.nanoTimestamp() > deadline) @panic("deque race test: no progress");
                std.Thread.yield() catch {};
            }
        }
        fn thiefStops() void {
            Q.test_hooks.steal_before_cas = null; // once: a retry after a lost CAS runs on
            thief_waiting.store(true, .release); // release: pairs with `waitFor`
            waitFor(&thief_go);
        }
        fn ownerStops() void {
            thief_go.store(true, .release); // the thief's CAS lands inside our window
            waitFor(&thief_done);
        }
        fn thief() void {
            stolen = q.steal();
            thief_done.store(true, .release); // release: publishes `stolen`
        }
    };
    var v: u32 = 7;
    for ([_]bool{ true, false }) |thief_first| {
        S.q = .{};
        S.thief_waiting.store(false, .monotonic);
        S.thief_go.store(false, .monotonic);
        S.thief_done.store(false, .monotonic);
        S.stolen = null;
        try testing.expect(S.q.push(&v));
        Q.test_hooks = .{
            .steal_before_cas = S.thiefStops,
            .pop_before_cas = if (thief_first) S.ownerStops else null,
        };
        defer Q.test_hooks = .{};
        const t = try std.Thread.spawn(.{}, S.thief, .{});
        S.waitFor(&S.thief_waiting);
        const popped = S.q.pop();
        S.thief_go.store(true, .release); // set already where the thief went first
        t.join();
        // Exactly one of them has it (where the thief went first, its CAS landed first, unless
        // a weak CAS failed spuriously: then it saw the queue empty on its retry).
        try testing.expect((popped == null) != (S.stolen == null));
        if (!thief_first) try testing.expectEqual(@as(?*u32, &v), popped);
        try testing.expectEqual(@as(u32, 0), S.q.len());
        try testing.expect(S.q.pop() == null and S.q.steal() == null);
    }
}

test "owner and thieves take every item exactly once" {
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.stress_ns);
    defer wd.stop();
    const cap = 16; // small, so the ring wraps and fills constantly
    const total = 200_000;
    const Q = Deque(u32, cap);
    const S = struct {
        var q: Q = .{};
        var thief_qs: [3]Q = .{ .{}, .{}, .{} };
        var seen: [total]std.atomic.Value(u8) = @splat(.init(0));
        var done: std.atomic.Value(bool) = .init(false);
        var taken: std.atomic.Value(u32) = .init(0);
        fn mark(v: *u32) void {
            _ = seen[v.*].fetchAdd(1, .monotonic);
            _ = taken.fetchAdd(1, .monotonic);
        }
        fn thief(i: usize) void {
            const mine = &thief_qs[i];
            while (!done.load(.acquire) or q.len() > 0) {
                const got = if (i == 0) q.steal() else mine.stealHalf(&q);
                if (got) |v| mark(v) else std.atomic.spinLoopHint();
                while (mine.pop()) |v| mark(v);
            }
        }
    };
    const vals = try testing.allocator.alloc(u32, total);
    defer testing.allocator.free(vals);
    for (vals, 0..) |*v, i| v.* = @intCast(i);
    var threads: [3]std.Thread = undefined;
    for (&threads, 0..) |*t, i| t.* = try std.Thread.spawn(.{}, S.thief, .{i});
    var prng = std.Random.DefaultPrng.init(0x5eed);
    for (vals) |*v| {
        while (!S.q.push(v)) {
            if (S.q.pop()) |got| S.mark(got); // the owner consumes too
        }
        // Pop now and then, so the owner races the thieves for the last items.
        if (prng.random().uintLessThan(u32, 4) == 0) {
            if (S.q.pop()) |got| S.mark(got);
        }
    }
    while (S.q.pop()) |got| S.mark(got);
    S.done.store(true, .release);
    for (threads) |t| t.join();
    try testing.expectEqual(@as(u32, total), S.taken.load(.monotonic));
    for (&S.seen) |*x| try testing.expectEqual(@as(u8, 1), x.load(.monotonic));
}

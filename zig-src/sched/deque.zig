//! A worker's local run queue: a bounded Chase-Lev style ring of pointers with one producer
//! (the owning worker pushes at the bottom) and many consumers (the owner and thieves take from
//! the top with a CAS). Taking from the top for the owner too makes the queue FIFO, so a
//! coroutine that yields goes behind the others; locality comes from the worker's LIFO slot
//! instead (as in Tokio).
//!
//! `Producer`-side calls (`push`) may only be made by the owner thread; `pop`, `steal` and
//! `stealHalf` by any thread. Capacity is a power of two fixed at compile time, so tests can
//! shrink it and make the full/wrap-around races show. Size: capacity * 8 bytes + two lines.
const std = @import("std");
const assert = std.debug.assert;

pub fn Deque(comptime T: type, comptime capacity: u32) type {
    comptime assert(std.math.isPowerOfTwo(capacity));
    return struct {
        const Self = @This();
        const mask = capacity - 1;

        /// Next index to consume. Advanced by CAS (acq_rel: the winner's read of the slot
        /// happens before the owner may overwrite it, which the owner learns by acquiring `top`).
        top: std.atomic.Value(u32) align(std.atomic.cache_line) = .init(0),
        /// Next index to fill; written by the owner only.
        bottom: std.atomic.Value(u32) align(std.atomic.cache_line) = .init(0),
        slots: [capacity]std.atomic.Value(?*T) = @splat(.init(null)),

        /// Owner only. Returns false (and leaves the queue unchanged) when it is full.
        pub fn push(q: *Self, item: *T) bool {
            const b = q.bottom.load(.monotonic); // only we write it
            // Acquire: pairs with the acq_rel CAS in `take`; a slot is free again only after the
            // consumer that took it has read it.
            const t = q.top.load(.acquire);
            assert(b -% t <= capacity);
            if (b -% t == capacity) return false;
            q.slots[b & mask].store(item, .monotonic);
            // Seq_cst: publishes the slot (release, pairs with the acquire load of `bottom` in
            // `take`) and orders this push before the scheduler's later load of its sleeper
            // count (the idle protocol's Dekker pair).
            q.bottom.store(b +% 1, .seq_cst);
            return true;
        }

        /// Any thread: takes the oldest item, or null if the queue is (momentarily) empty.
        pub fn pop(q: *Self) ?*T {
            return q.take();
        }

        /// Any thread; the same operation as `pop`, named for the thief's point of view.
        pub fn steal(q: *Self) ?*T {
            return q.take();
        }

        fn take(q: *Self) ?*T {
            while (true) {
                // Acquire on both: pairs with the owner's release/seq_cst store of `bottom` (so
                // the slot is initialised) and with other consumers' CAS of `top`.
                const t = q.top.load(.acquire);
                const b = q.bottom.load(.acquire);
                if (b -% t == 0 or b -% t > capacity) return null;
                const item = q.slots[t & mask].load(.monotonic);
                // Acq_rel: pairs with the owner's acquire load of `top` in `push`.
                if (q.top.cmpxchgWeak(t, t +% 1, .acq_rel, .monotonic) == null) return item.?;
            }
        }

        /// Any thread: moves up to half of `victim`'s items into `q` (which the caller must own)
        /// and returns one more to run now. Null if the victim was empty.
        pub fn stealHalf(q: *Self, victim: *Self) ?*T {
            while (true) {
                const t = victim.top.load(.acquire);
                const b = victim.bottom.load(.acquire);
                const n = b -% t;
                if (n == 0 or n > capacity) return null;
                // Take ceil(n/2), but never more than fits in our own queue plus the one to run.
                const mine_b = q.bottom.load(.monotonic);
                const room = capacity - (mine_b -% q.top.load(.acquire));
                const want = @min(n - n / 2, room + 1);
                var batch: [capacity]?*T = undefined;
                for (0..want) |i| batch[i] = victim.slots[(t +% @as(u32, @intCast(i))) & mask].load(.monotonic);
                // Acq_rel: as in `take`; one CAS claims the whole batch.
                if (victim.top.cmpxchgWeak(t, t +% want, .acq_rel, .monotonic) != null) continue;
                for (batch[1..want]) |item| {
                    const ok = q.push(item.?);
                    assert(ok); // `room` said it fits
                }
                return batch[0].?;
            }
        }

        /// Approximate number of items (exact when called by the owner with no thieves).
        /// Seq_cst loads: an idle worker's look for work is the load half of a Dekker pair
        /// with `push`'s seq_cst store (see sched/scheduler.zig, `Worker.idle`).
        pub fn len(q: *const Self) u32 {
            const b = q.bottom.load(.seq_cst);
            const t = q.top.load(.seq_cst);
            const n = b -% t;
            return if (n > capacity) 0 else n;
        }
    };
}

const testing = std.testing;

test "FIFO order, full and empty" {
    var q: Deque(u32, 4) = .{};
    var vals = [_]u32{ 1, 2, 3, 4, 5 };
    try testing.expect(q.pop() == null);
    for (vals[0..4]) |*v| try testing.expect(q.push(v));
    try testing.expect(!q.push(&vals[4])); // full
    try testing.expectEqual(@as(u32, 1), q.pop().?.*);
    try testing.expect(q.push(&vals[4])); // wraps around
    for ([_]u32{ 2, 3, 4, 5 }) |want| try testing.expectEqual(want, q.pop().?.*);
    try testing.expect(q.pop() == null);
}

test "stealHalf moves half and returns one" {
    var a: Deque(u32, 8) = .{};
    var b: Deque(u32, 8) = .{};
    var vals: [6]u32 = .{ 0, 1, 2, 3, 4, 5 };
    for (&vals) |*v| try testing.expect(a.push(v));
    const got = b.stealHalf(&a).?;
    try testing.expectEqual(@as(u32, 0), got.*);
    try testing.expectEqual(@as(u32, 2), b.len());
    try testing.expectEqual(@as(u32, 3), a.len());
    try testing.expectEqual(@as(u32, 1), b.pop().?.*);
    try testing.expectEqual(@as(u32, 3), a.pop().?.*);
}

test "concurrent consumers take every item exactly once" {
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
    for (vals) |*v| {
        while (!S.q.push(v)) {
            if (S.q.pop()) |got| S.mark(got); // the owner consumes too
        }
    }
    while (S.q.pop()) |got| S.mark(got);
    S.done.store(true, .release);
    for (threads) |t| t.join();
    try testing.expectEqual(@as(u32, total), S.taken.load(.monotonic));
    for (&S.seen) |*s| try testing.expectEqual(@as(u8, 1), s.load(.monotonic));
}

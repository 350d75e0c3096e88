//! The JavaScript side of waits: a completion ring per isolate.
//!
//! JavaScript cannot block, so a send or receive that must wait is queued as a
//! `channel.AsyncOp` owned by a `Pending` here. Whoever completes it (a native coroutine, a
//! thread, another isolate, close or cancel) runs `Pending.notify`, which appends one
//! `Completion` record to the waiting isolate's `Ring` and wakes the ring's one waiter, if
//! any. The isolate keeps at most one wait outstanding on its ring and drains every record
//! per wake-up, so many completions cost one wake-up (DESIGN.md section 3: waking JS is
//! batched). Nothing here calls into JavaScript.
//!
//! Memory: a ring reserves one record slot for every pending operation when it is
//! submitted, so completing one never allocates (completers may be scheduler workers).
const std = @import("std");
const assert = std.debug.assert;
const Futex = std.Thread.Futex;
const channel = @import("../chan/channel.zig");
const scheduler = @import("../sched/scheduler.zig");
const status_mod = @import("../status.zig");

/// One completed operation: which, and its status code (0, KC_EPIPE, KC_ECANCELED).
pub const Completion = extern struct {
    ticket: u32,
    status: i32,
};

pub const Ring = struct {
    allocator: std.mem.Allocator,
    mutex: std.Thread.Mutex = .{},
    records: std.ArrayListUnmanaged(Completion) = .empty,
    /// Record slots promised: pending operations plus undrained records (records.capacity is
    /// at least this).
    reserved: usize = 0,
    /// Bumped on every record (release, under the lock); the waiter futex-waits on it.
    signal: std.atomic.Value(u32) = .init(0),

    pub fn init(allocator: std.mem.Allocator) Ring {
        return .{ .allocator = allocator };
    }

    /// No operation may be pending on the ring.
    pub fn deinit(r: *Ring) void {
        assert(r.reserved == r.records.items.len); // an operation is still pending
        r.records.deinit(r.allocator);
        r.* = undefined;
    }

    fn reserve(r: *Ring) error{OutOfMemory}!void {
        r.mutex.lock();
        defer r.mutex.unlock();
        try r.records.ensureTotalCapacity(r.allocator, r.reserved + 1);
        r.reserved += 1;
    }

    fn unreserve(r: *Ring) void {
        r.mutex.lock();
        defer r.mutex.unlock();
        assert(r.reserved > r.records.items.len);
        r.reserved -= 1;
    }

    /// A completer: appends a record (into a reserved slot) and wakes the waiter.
    fn push(r: *Ring, c: Completion) void {
        r.mutex.lock();
        r.records.appendAssumeCapacity(c);
        // Release: pairs with the acquire load in `wait`.
        _ = r.signal.fetchAdd(1, .release);
        r.mutex.unlock();
        Futex.wake(&r.signal, 1);
    }

    /// Moves up to out.len records into `out`, oldest first; returns how many.
    pub fn drain(r: *Ring, out: []Completion) usize {
        r.mutex.lock();
        defer r.mutex.unlock();
        const n = @min(out.len, r.records.items.len);
        @memcpy(out[0..n], r.records.items[0..n]);
        const rest = r.records.items.len - n;
        std.mem.copyForwards(Completion, r.records.items[0..rest], r.records.items[n..]);
        r.records.shrinkRetainingCapacity(rest);
        r.reserved -= n;
        return n;
    }

    /// Blocks the calling thread until a record is available or `deadline` (monotonic ns,
    /// null = none) passes; true if records are available. The isolate's one outstanding
    /// wait (a nonblocking FFI call runs it on a helper thread, never on a scheduler worker).
    pub fn wait(r: *Ring, deadline: ?u64) bool {
        while (true) {
            const seen = r.signal.load(.acquire); // pairs with `push`
            r.mutex.lock();
            const ready = r.records.items.len > 0;
            r.mutex.unlock();
            if (ready) return true;
            if (deadline) |d| {
                const now = scheduler.monotonicNs();
                if (now >= d) return false;
                Futex.timedWait(&r.signal, seen, d - now) catch {};
            } else Futex.wait(&r.signal, seen);
        }
    }

    /// Wakes a `wait` without a record (shutdown of the isolate's side).
    pub fn interrupt(r: *Ring) void {
        _ = r.signal.fetchAdd(1, .release);
        Futex.wake(&r.signal, 1);
    }
};

/// One operation waiting on behalf of JavaScript: owns the element storage and, once it
/// completes, reports `ticket` on `ring`. Allocated by `submit`; freed by `finish` after the
/// isolate has read its record (and, for a receive, the value), or at once by `abort` when
/// it was withdrawn.
pub const Pending = struct {
    op: channel.AsyncOp,
    ring: *Ring,
    ch: *channel.Channel,
    ticket: u32,
    /// The value to send, or where a received value lands (elem_size bytes).
    elem: []u8,

    pub const Started = union(enum) {
        /// Completed at once (a receive's value is in `out`); nothing stays allocated.
        done,
        /// Queued: its record arrives on the ring later.
        pending: *Pending,
    };

    /// Sends `value` or receives into `out` (both elem_size bytes) for JavaScript: completes
    /// at once when it can, else queues a `Pending` that reports `ticket` on `ring`.
    pub fn submit(allocator: std.mem.Allocator, ring: *Ring, ch: *channel.Channel, kind: channel.ClauseKind, ticket: u32, bytes: []u8) channel.Error!Started {
        if (bytes.len != ch.elem_size) return error.InvalidArgument;
        const p = try allocator.create(Pending);
        errdefer allocator.destroy(p);
        const elem = try allocator.alloc(u8, ch.elem_size);
        errdefer allocator.free(elem);
        if (kind == .send) @memcpy(elem, bytes);
        p.* = .{ .op = .{ .kind = kind, .notify = notify }, .ring = ring, .ch = ch, .ticket = ticket, .elem = elem };
        try ring.reserve();
        const res = ch.submit(&p.op, elem.ptr) catch |err| {
            ring.unreserve();
            return err;
        };
        switch (res) {
            .done => {
                ring.unreserve();
                if (kind == .receive) @memcpy(bytes, elem);
                allocator.free(elem);
                allocator.destroy(p);
                return .done;
            },
            .pending => return .{ .pending = p },
        }
    }

    fn notify(op: *channel.AsyncOp, result: channel.Error!void) void {
        const p: *Pending = @fieldParentPtr("op", op);
        const code: i32 = if (result) |_| 0 else |err| status_mod.fromError(err).code();
        p.ring.push(.{ .ticket = p.ticket, .status = code });
    }

    /// Takes the operation back if it is still queued (true: no record will come; it is freed
    /// here). False: it completed, its record is (or will be) on the ring; `finish` it then.
    pub fn abort(p: *Pending, allocator: std.mem.Allocator) bool {
        if (!p.ch.withdraw(&p.op)) return false;
        p.ring.unreserve();
        allocator.free(p.elem);
        allocator.destroy(p);
        return true;
    }

    /// After its record was drained: copies a received value into `out` (if given) and frees.
    pub fn finish(p: *Pending, allocator: std.mem.Allocator, out: ?[]u8) void {
        if (out) |o| @memcpy(o[0..p.elem.len], p.elem);
        allocator.free(p.elem);
        allocator.destroy(p);
    }
};

const testing = std.testing;

test "JS-style waiters: completions from native coroutines land on the ring, batched; abort and close" {
    var ring = Ring.init(testing.allocator);
    defer ring.deinit();
    const ch = try channel.Channel.create(testing.allocator, .{ .elem_size = 8 });
    defer ch.destroy();
    // Eight pending receives, as an isolate would queue them.
    var pendings: [8]*Pending = undefined;
    for (&pendings, 0..) |*slot, i| {
        var out: u64 = 0;
        const started = try Pending.submit(testing.allocator, &ring, ch, .receive, @intCast(100 + i), std.mem.asBytes(&out));
        slot.* = started.pending;
    }
    // Native coroutines on a scheduler send 0..7; each completes one pending receive.
    var s: scheduler.Scheduler = undefined;
    try s.start(testing.allocator, .{ .workers = 2, .stack_size = 32 * 1024 });
    defer s.shutdown(.cancel);
    const S = struct {
        var chan: *channel.Channel = undefined;
        var next: std.atomic.Value(u64) = .init(0);
        fn sender(_: ?*anyopaque) callconv(.c) void {
            var v = next.fetchAdd(1, .monotonic);
            chan.send(std.mem.asBytes(&v), null, false) catch unreachable;
        }
    };
    S.chan = ch;
    for (0..8) |_| _ = try s.spawn(S.sender, null);
    // The "isolate": one outstanding wait at a time, draining everything per wake-up.
    var got: [8]bool = @splat(false);
    var records: [16]Completion = undefined;
    var seen: usize = 0;
    var wakeups: usize = 0;
    const deadline = scheduler.monotonicNs() + 10 * std.time.ns_per_s;
    while (seen < 8) {
        try testing.expect(ring.wait(deadline));
        wakeups += 1;
        const n = ring.drain(&records);
        for (records[0..n]) |c| {
            try testing.expectEqual(@as(i32, 0), c.status);
            const p = pendings[c.ticket - 100];
            var v: u64 = 0;
            p.finish(testing.allocator, std.mem.asBytes(&v));
            try testing.expect(!got[v]);
            got[v] = true;
            seen += 1;
        }
    }
    try testing.expect(wakeups <= 8);
    try s.drainFor(10 * std.time.ns_per_s);

    // An aborted wait is withdrawn: no record; a sender then finds nobody.
    var out: u64 = 0;
    const p = (try Pending.submit(testing.allocator, &ring, ch, .receive, 1, std.mem.asBytes(&out))).pending;
    try testing.expect(p.abort(testing.allocator));
    var v: u64 = 9;
    try testing.expectError(error.WouldBlock, ch.send(std.mem.asBytes(&v), null, true));
    // A pending send completes with the receiver's take; close reports KC_EPIPE to a receive.
    const ps = (try Pending.submit(testing.allocator, &ring, ch, .send, 2, std.mem.asBytes(&v))).pending;
    try testing.expectEqual(@as(u64, 9), try recv(ch));
    const pr = (try Pending.submit(testing.allocator, &ring, ch, .receive, 3, std.mem.asBytes(&out))).pending;
    _ = ch.close();
    try testing.expect(ring.wait(deadline));
    var two: [4]Completion = undefined;
    try testing.expectEqual(@as(usize, 2), ring.drain(&two));
    try testing.expectEqual(Completion{ .ticket = 2, .status = 0 }, two[0]);
    try testing.expectEqual(Completion{ .ticket = 3, .status = status_mod.Status.closed.code() }, two[1]);
    ps.finish(testing.allocator, null);
    pr.finish(testing.allocator, null);
    try testing.expect(!ring.wait(scheduler.monotonicNs() + std.time.ns_per_ms)); // nothing left
}

fn recv(ch: *channel.Channel) channel.Error!u64 {
    var v: u64 = 0;
    try ch.receive(std.mem.asBytes(&v), null, true);
    return v;
}

//! A channel of fixed-size elements, copied in and out: rendezvous, buffered, conflated or
//! unlimited, with an overflow policy, waiter queues with direct hand-off, close and cancel,
//! and built-in counters. One lock per channel guards everything (as in Go); waiters block
//! outside it.
//!
//! Who may wait: a coroutine of a scheduler (it parks; its worker runs other coroutines), a
//! hand-driven coroutine (it parks; its resumer must resume it once unparked), or a plain OS
//! thread (it sleeps on a futex). Every blocking call takes an optional absolute deadline
//! (CLOCK_MONOTONIC ns, `scheduler.monotonicNs`); hand-driven coroutines cannot time out.
//!
//! Semantics (Kotlin's and Go's, see DESIGN.md section 5):
//! - FIFO; with waiting receivers a send hands its value straight to the oldest receiver, and
//!   with waiting senders a receive takes from the buffer and moves the oldest sender's value in.
//! - Overflow when the buffer is full: `suspend` waits, `drop_latest` discards the new value,
//!   `drop_oldest` discards the oldest buffered one; both drops count as a successful send and
//!   hand the dropped value to `on_undelivered`. Conflated = capacity 1 + drop_oldest (any other
//!   policy is an error); rendezvous + a drop policy = a 1-slot buffer; unlimited ignores the
//!   policy and grows (doubling; no preallocation beyond 16 elements).
//! - `close` returns true once. Buffered values stay receivable and a sender already waiting
//!   still delivers; new sends fail with `Closed`; a receive fails with `Closed` only when the
//!   buffer is empty and no sender waits.
//! - `cancel` closes and drops everything: buffered values and waiting senders' values go to
//!   `on_undelivered`, every waiter fails with `Cancelled`.
const std = @import("std");
const assert = std.debug.assert;
const Futex = std.Thread.Futex;
const coroutine = @import("../coro/coroutine.zig");
const scheduler = @import("../sched/scheduler.zig");

pub const Overflow = enum(u8) { @"suspend" = 0, drop_oldest = 1, drop_latest = 2 };

pub const unlimited: u32 = std.math.maxInt(u32);
/// "buffered" in the API means this capacity.
pub const default_buffered: u32 = 64;

pub const Error = error{ Closed, Cancelled, Timeout, WouldBlock, InvalidArgument, OutOfMemory };

pub const UndeliveredFn = *const fn (ctx: ?*anyopaque, elem: [*]const u8) callconv(.c) void;

pub const Options = struct {
    elem_size: u32,
    /// 0 = rendezvous, `unlimited`, or a buffer size.
    capacity: u32 = 0,
    overflow: Overflow = .@"suspend",
    conflated: bool = false,
    on_undelivered: ?UndeliveredFn = null,
    undelivered_ctx: ?*anyopaque = null,
};

/// Counters, updated under the channel lock; `snapshot` copies them.
pub const Metrics = struct {
    sends: u64 = 0,
    receives: u64 = 0,
    bytes_sent: u64 = 0,
    bytes_received: u64 = 0,
    fail_full: u64 = 0,
    fail_closed: u64 = 0,
    fail_timeout: u64 = 0,
    fail_cancelled: u64 = 0,
    dropped: u64 = 0,
    first_op_ns: u64 = 0,
    last_op_ns: u64 = 0,
    /// When the snapshot was taken (CLOCK_MONOTONIC ns); set by `snapshot`.
    taken_ns: u64 = 0,

    /// Per-second rates of the counters between two snapshots of one channel (`earlier` first).
    pub const Rates = struct {
        sends: f64,
        receives: f64,
        bytes_sent: f64,
        bytes_received: f64,
        failures: f64,
        dropped: f64,
    };

    pub fn rates(earlier: Metrics, later: Metrics) error{InvalidArgument}!Rates {
        if (later.taken_ns <= earlier.taken_ns) return error.InvalidArgument;
        const secs = @as(f64, @floatFromInt(later.taken_ns - earlier.taken_ns)) / std.time.ns_per_s;
        const d = struct {
            fn per(a: u64, b: u64, s: f64) f64 {
                return @as(f64, @floatFromInt(b -% a)) / s;
            }
        }.per;
        const fails_a = earlier.fail_full + earlier.fail_closed + earlier.fail_timeout + earlier.fail_cancelled;
        const fails_b = later.fail_full + later.fail_closed + later.fail_timeout + later.fail_cancelled;
        return .{
            .sends = d(earlier.sends, later.sends, secs),
            .receives = d(earlier.receives, later.receives, secs),
            .bytes_sent = d(earlier.bytes_sent, later.bytes_sent, secs),
            .bytes_received = d(earlier.bytes_received, later.bytes_received, secs),
            .failures = d(fails_a, fails_b, secs),
            .dropped = d(earlier.dropped, later.dropped, secs),
        };
    }
};

// Waiter status (u32 so that a thread can futex-wait on it).
const pending: u32 = 1;
const done_ok: u32 = 0;
const done_closed: u32 = 2;
const done_cancelled: u32 = 3;

/// The shared state of one `select` call: which clause won, and the outcome (a futex word).
pub const SelectState = struct {
    /// `no_winner` until a clause wins (or the select gives up: `gave_up`). CAS from
    /// `no_winner` only; the winner is whoever's CAS succeeds (acq_rel).
    winner: std.atomic.Value(u32) = .init(no_winner),
    status: std.atomic.Value(u32) = .init(pending),

    pub const no_winner: u32 = std.math.maxInt(u32);
    pub const gave_up: u32 = std.math.maxInt(u32) - 1;
};

/// One blocked operation (or one clause of a blocked select). Lives on the blocked party's
/// stack; only touched by others while it is linked into a queue, under the channel lock.
const Waiter = struct {
    next: ?*Waiter = null,
    prev: ?*Waiter = null,
    /// In a queue (maintained by `WaitQueue`, under the channel lock).
    linked: bool = false,
    /// Sender: the value to send. Receiver: where to put the received value.
    elem: [*]u8,
    /// `pending` until a completer sets the outcome under the lock (release; pairs with the
    /// waiter's acquire load). A select's clauses use the select's status instead.
    own_status: std.atomic.Value(u32) = .init(pending),
    /// How to wake it: a coroutine (`ref`, with its scheduler if any), or a thread (futex on
    /// the status word).
    ref: ?coroutine.Ref,
    sched: ?*scheduler.Scheduler,
    /// Set for a select clause: the select, and this clause's index.
    sel: ?*SelectState = null,
    clause: u32 = 0,

    const Wake = struct { ref: ?coroutine.Ref, sched: ?*scheduler.Scheduler, status: *std.atomic.Value(u32) };

    fn statusWord(w: *Waiter) *std.atomic.Value(u32) {
        return if (w.sel) |sel| &sel.status else &w.own_status;
    }

    /// For a select clause: tries to make this clause the select's winner. Plain waiters
    /// always "win". Under the channel lock.
    fn claim(w: *Waiter) bool {
        const sel = w.sel orelse return true;
        // Acq_rel: pairs with the other claimants' CAS and with the selecting party's.
        return sel.winner.cmpxchgStrong(SelectState.no_winner, w.clause, .acq_rel, .acquire) == null;
    }

    /// Under the lock, after a successful `claim`: records the outcome and returns what `wake`
    /// needs. After the lock is released the waiter may return and its memory be reused, so
    /// nothing else of it may be read then; waking a coroutine by `Ref` or a futex address that
    /// is stale is harmless (a stray permit or a spurious futex wake, both of which every wait
    /// loop tolerates).
    fn complete(w: *Waiter, outcome: u32) Wake {
        const status = w.statusWord();
        const info: Wake = .{ .ref = w.ref, .sched = w.sched, .status = status };
        status.store(outcome, .release);
        return info;
    }

    fn wake(info: Wake) void {
        if (info.ref) |r| {
            if (info.sched) |s| _ = s.unpark(r) else _ = r.unpark();
        } else {
            Futex.wake(info.status, 1);
        }
    }
};

const WaitQueue = struct {
    head: ?*Waiter = null,
    tail: ?*Waiter = null,

    fn push(q: *WaitQueue, w: *Waiter) void {
        assert(!w.linked);
        w.next = null;
        w.prev = q.tail;
        if (q.tail) |t| t.next = w else q.head = w;
        q.tail = w;
        w.linked = true;
    }

    /// The oldest waiter that can still complete, unlinked and claimed. Select clauses whose
    /// select already has a winner (or gave up) are unlinked and skipped on the way.
    fn pop(q: *WaitQueue) ?*Waiter {
        while (q.head) |w| {
            q.remove(w);
            if (w.claim()) return w;
        }
        return null;
    }

    fn remove(q: *WaitQueue, w: *Waiter) void {
        assert(w.linked);
        if (w.prev) |p| p.next = w.next else q.head = w.next;
        if (w.next) |n| n.prev = w.prev else q.tail = w.prev;
        w.next = null;
        w.prev = null;
        w.linked = false;
    }

    fn isEmpty(q: *const WaitQueue) bool {
        return q.head == null;
    }
};

/// The channel lock: test-and-test-and-set with a bounded spin, then yielding the thread.
/// Critical sections are a few dozen instructions and never block, so a waiter is better off
/// spinning than sleeping in the kernel (a futex mutex made contended channel operations ~5x
/// slower here).
///
/// A waiter pauses `pauses_per_look` spin hints before every look at the lock, as Go's lock
/// does (30 per look). Each look pulls the lock's line (and the channel state beside it) away
/// from the holder, which is likely to take the lock again for its next operation a few ns
/// after releasing it; looking rarely lets it run several operations on a hot line instead
/// of moving the line between cores on every one. With a look after every single hint, two
/// workers hammering one channel (ChanSem) took ~90 ns per send+receive; with 32, ~23 ns.
const SpinLock = struct {
    locked: std.atomic.Value(bool) = .init(false),

    const pauses_per_look = 32;
    /// Looks at a held lock before the waiter starts yielding the thread between looks (the
    /// holder was probably preempted).
    const looks_before_yield = 64;

    pub fn lock(l: *SpinLock) void {
        // Acquire: pairs with the release in `unlock`; the previous holder's writes are visible.
        if (!l.locked.swap(true, .acquire)) return;
        var looks: u32 = 0;
        while (true) {
            while (true) {
                if (looks < looks_before_yield) {
                    looks += 1;
                    for (0..pauses_per_look) |_| std.atomic.spinLoopHint();
                } else std.Thread.yield() catch {};
                // Monotonic: only a hint; the swap below acquires.
                if (!l.locked.load(.monotonic)) break;
            }
            if (!l.locked.swap(true, .acquire)) return;
        }
    }

    pub fn unlock(l: *SpinLock) void {
        l.locked.store(false, .release);
    }
};

/// Cheap timestamps for the first/last-operation metrics: CLOCK_MONOTONIC_COARSE (a few ns,
/// tick resolution) rather than a precise clock read (~20 ns) on every operation.
fn coarseNs() u64 {
    const ts = std.posix.clock_gettime(.MONOTONIC_COARSE) catch return 0;
    return @as(u64, @intCast(ts.sec)) * std.time.ns_per_s + @as(u64, @intCast(ts.nsec));
}

/// Up to this many woken waiters are collected under the lock and woken after it.
const max_wakes = 64;

/// Waits until `status` is no longer `pending` or `deadline` passes (true: timed out). A
/// coroutine parks (with a timer on a scheduler; a hand-driven one cannot time out), a thread
/// sleeps on the futex. Acquire on every status load: pairs with the completer's release, so
/// what it copied for us is visible.
fn waitFor(status: *std.atomic.Value(u32), ref: ?coroutine.Ref, sched: ?*scheduler.Scheduler, deadline: ?u64) bool {
    if (ref) |_| {
        while (status.load(.acquire) == pending) {
            if (sched) |s| {
                if (deadline) |d| {
                    if (s.parkUntil(d) catch false) return status.load(.acquire) == pending;
                } else coroutine.park() catch unreachable; // we are a coroutine
            } else coroutine.park() catch unreachable; // hand-driven: no deadline
        }
        return false;
    }
    while (status.load(.acquire) == pending) {
        if (deadline) |d| {
            const now = scheduler.monotonicNs();
            if (now >= d) return true;
            Futex.timedWait(status, pending, d - now) catch {};
        } else Futex.wait(status, pending);
    }
    return false;
}

pub const Channel = struct {
    allocator: std.mem.Allocator,
    mutex: SpinLock = .{},
    elem_size: u32,
    /// Buffer slots (0 for rendezvous); `unlimited` grows.
    capacity: u32,
    overflow: Overflow,
    on_undelivered: ?UndeliveredFn,
    undelivered_ctx: ?*anyopaque,
    buf: []u8 = &.{},
    /// Slots allocated in `buf` (== capacity for bounded channels).
    slots: u32 = 0,
    head: u32 = 0,
    len: u32 = 0,
    closed: bool = false,
    cancelled: bool = false,
    senders: WaitQueue = .{},
    receivers: WaitQueue = .{},
    metrics: Metrics = .{},
    /// True when a receive could make progress (something buffered, a sender waiting, or
    /// closed), as of the last unlock. Lets a try-receive on an empty channel return without
    /// taking the lock (Go does the same): a false read is a state the channel really was in
    /// after some operation, so answering "would block" then is linearisable.
    recv_ready: std.atomic.Value(bool) = .init(false),

    /// Releases the lock, first publishing `recv_ready` (release: pairs with the acquire load
    /// in `receive`'s fast path).
    fn unlock(ch: *Channel) void {
        ch.recv_ready.store(ch.len != 0 or !ch.senders.isEmpty() or ch.closed, .release);
        ch.mutex.unlock();
    }

    pub fn create(allocator: std.mem.Allocator, options: Options) Error!*Channel {
        if (options.elem_size == 0 or options.elem_size > 1 << 20) return error.InvalidArgument;
        var capacity = options.capacity;
        var overflow = options.overflow;
        if (options.conflated) {
            if (overflow != .@"suspend" and overflow != .drop_oldest) return error.InvalidArgument;
            capacity = 1;
            overflow = .drop_oldest;
        } else if (capacity == unlimited) {
            overflow = .@"suspend"; // never full
        } else if (capacity == 0 and overflow != .@"suspend") {
            capacity = 1; // rendezvous + drop policy = a 1-slot buffer
        }
        const ch = try allocator.create(Channel);
        errdefer allocator.destroy(ch);
        ch.* = .{
            .allocator = allocator,
            .elem_size = options.elem_size,
            .capacity = capacity,
            .overflow = overflow,
            .on_undelivered = options.on_undelivered,
            .undelivered_ctx = options.undelivered_ctx,
        };
        const initial: u32 = if (capacity == unlimited) 16 else capacity;
        if (initial > 0) {
            ch.buf = try allocator.alloc(u8, @as(usize, initial) * options.elem_size);
            ch.slots = initial;
        }
        return ch;
    }

    /// Frees the channel. Nothing may wait on it or use it any more; buffered values are
    /// handed to `on_undelivered`.
    pub fn destroy(ch: *Channel) void {
        assert(ch.senders.isEmpty());
        assert(ch.receivers.isEmpty());
        while (ch.len > 0) {
            ch.undelivered(ch.slot(ch.head));
            ch.head = (ch.head + 1) % ch.slots;
            ch.len -= 1;
        }
        ch.allocator.free(ch.buf);
        ch.allocator.destroy(ch);
    }

    fn slot(ch: *Channel, index: u32) [*]u8 {
        return ch.buf.ptr + @as(usize, index) * ch.elem_size;
    }

    fn copy(ch: *Channel, dst: [*]u8, src: [*]const u8) void {
        @memcpy(dst[0..ch.elem_size], src[0..ch.elem_size]);
    }

    fn undelivered(ch: *Channel, elem: [*]const u8) void {
        ch.metrics.dropped += 1;
        if (ch.on_undelivered) |f| f(ch.undelivered_ctx, elem);
    }

    fn touch(ch: *Channel) void {
        const now = coarseNs();
        if (ch.metrics.first_op_ns == 0) ch.metrics.first_op_ns = now;
        ch.metrics.last_op_ns = now;
    }

    fn isFull(ch: *const Channel) bool {
        if (ch.capacity == unlimited) return false;
        return ch.len == ch.capacity;
    }

    fn pushBuffer(ch: *Channel, elem: [*]const u8) error{OutOfMemory}!void {
        if (ch.len == ch.slots) {
            assert(ch.capacity == unlimited);
            try ch.grow();
        }
        ch.copy(ch.slot((ch.head + ch.len) % ch.slots), elem);
        ch.len += 1;
    }

    fn popBuffer(ch: *Channel, out: [*]u8) void {
        assert(ch.len > 0);
        ch.copy(out, ch.slot(ch.head));
        ch.head = (ch.head + 1) % ch.slots;
        ch.len -= 1;
    }

    fn grow(ch: *Channel) error{OutOfMemory}!void {
        const new_slots = ch.slots * 2;
        const nb = try ch.allocator.alloc(u8, @as(usize, new_slots) * ch.elem_size);
        for (0..ch.len) |i| {
            const src = ch.slot((ch.head + @as(u32, @intCast(i))) % ch.slots);
            @memcpy(nb[i * ch.elem_size ..][0..ch.elem_size], src[0..ch.elem_size]);
        }
        ch.allocator.free(ch.buf);
        ch.buf = nb;
        ch.slots = new_slots;
        ch.head = 0;
    }

    // The operations, with the lock held: each either completes (collecting at most one waiter
    // to wake after the unlock) or says why it cannot. Plain operations and `select` share them.

    const SendResult = enum { done, full, closed };
    const RecvResult = enum { done, empty, closed };

    fn sendLocked(ch: *Channel, elem: [*]const u8, wake: *?Waiter.Wake) error{OutOfMemory}!SendResult {
        ch.touch();
        if (ch.closed) return .closed;
        if (ch.receivers.pop()) |r| {
            // Direct hand-off: the receiver gets our value without touching the buffer.
            assert(ch.len == 0);
            ch.copy(r.elem, elem);
            ch.countSend();
            ch.countReceive();
            wake.* = r.complete(done_ok);
            return .done;
        }
        if (!ch.isFull() and ch.slots > 0) {
            try ch.pushBuffer(elem);
            ch.countSend();
            return .done;
        }
        switch (ch.overflow) {
            .drop_latest => {
                ch.countSend();
                ch.undelivered(elem);
                return .done;
            },
            .drop_oldest => {
                assert(ch.len > 0);
                ch.undelivered(ch.slot(ch.head));
                ch.head = (ch.head + 1) % ch.slots;
                ch.len -= 1;
                ch.pushBuffer(elem) catch unreachable; // a slot was just freed
                ch.countSend();
                return .done;
            },
            .@"suspend" => return .full,
        }
    }

    fn recvLocked(ch: *Channel, out: [*]u8, wake: *?Waiter.Wake) RecvResult {
        ch.touch();
        if (ch.len > 0) {
            ch.popBuffer(out);
            ch.countReceive();
            // Room now: the oldest waiting sender's value moves into the buffer.
            if (ch.senders.pop()) |s| {
                ch.pushBuffer(s.elem) catch unreachable; // a slot was just freed
                ch.countSend();
                wake.* = s.complete(done_ok);
            }
            return .done;
        }
        if (ch.senders.pop()) |s| {
            // Rendezvous: take the value straight from the sender.
            ch.copy(out, s.elem);
            ch.countSend();
            ch.countReceive();
            wake.* = s.complete(done_ok);
            return .done;
        }
        return if (ch.closed) .closed else .empty;
    }

    fn closedError(ch: *const Channel) Error {
        return if (ch.cancelled) error.Cancelled else error.Closed;
    }

    /// Sends the value at `elem` (elem_size bytes). `deadline` null = wait forever; `try_only`
    /// = never wait (error.WouldBlock when it would). Any thread or coroutine.
    pub fn send(ch: *Channel, elem: [*]const u8, deadline: ?u64, try_only: bool) Error!void {
        ch.mutex.lock();
        var wake: ?Waiter.Wake = null;
        const result = ch.sendLocked(elem, &wake) catch |e| {
            ch.unlock();
            return e;
        };
        switch (result) {
            .done => {
                ch.unlock();
                if (wake) |info| Waiter.wake(info);
                return;
            },
            .closed => {
                ch.metrics.fail_closed += 1;
                ch.unlock();
                return ch.closedError();
            },
            .full => {},
        }
        if (try_only) {
            ch.metrics.fail_full += 1;
            ch.unlock();
            return error.WouldBlock;
        }
        var w = waiterForCaller(@constCast(elem));
        ch.senders.push(&w);
        return ch.block(&w, &ch.senders, deadline);
    }

    /// Receives into `out` (elem_size bytes). Arguments as for `send`.
    pub fn receive(ch: *Channel, out: [*]u8, deadline: ?u64, try_only: bool) Error!void {
        if (try_only and !ch.recv_ready.load(.acquire)) return error.WouldBlock;
        ch.mutex.lock();
        var wake: ?Waiter.Wake = null;
        switch (ch.recvLocked(out, &wake)) {
            .done => {
                ch.unlock();
                if (wake) |info| Waiter.wake(info);
                return;
            },
            .closed => {
                ch.metrics.fail_closed += 1;
                ch.unlock();
                return ch.closedError();
            },
            .empty => {},
        }
        if (try_only) {
            ch.unlock();
            return error.WouldBlock;
        }
        var w = waiterForCaller(out);
        ch.receivers.push(&w);
        return ch.block(&w, &ch.receivers, deadline);
    }

    fn countSend(ch: *Channel) void {
        ch.metrics.sends += 1;
        ch.metrics.bytes_sent += ch.elem_size;
    }

    fn countReceive(ch: *Channel) void {
        ch.metrics.receives += 1;
        ch.metrics.bytes_received += ch.elem_size;
    }

    fn waiterForCaller(elem: [*]u8) Waiter {
        if (coroutine.current()) |co| {
            const ref: coroutine.Ref = .{ .co = co, .gen = co.generation() };
            const s: ?*scheduler.Scheduler = if (co.owner) |o| @ptrCast(@alignCast(o)) else null;
            return .{ .elem = elem, .ref = ref, .sched = s };
        }
        return .{ .elem = elem, .ref = null, .sched = null };
    }

    /// Called with the lock held and `w` queued on `q`; releases the lock and waits for an
    /// outcome or the deadline.
    fn block(ch: *Channel, w: *Waiter, q: *WaitQueue, deadline: ?u64) Error!void {
        ch.unlock();
        const timed_out = waitFor(&w.own_status, w.ref, w.sched, deadline);
        if (timed_out) {
            ch.mutex.lock();
            if (w.own_status.load(.monotonic) == pending) {
                // Still queued: withdraw. Nothing was delivered (an aborted send's value is
                // never delivered), and the queue stays intact.
                q.remove(w);
                ch.metrics.fail_timeout += 1;
                ch.unlock();
                return error.Timeout;
            }
            ch.unlock(); // completed while we gave up: honour the outcome
        }
        return outcomeError(w.own_status.load(.acquire));
    }

    /// Sends and receives have a non-error outcome `done_ok`; the others map to errors.
    fn outcomeError(outcome: u32) Error!void {
        return switch (outcome) {
            done_ok => {},
            done_closed => error.Closed,
            done_cancelled => error.Cancelled,
            else => unreachable, // every completer writes one of the three
        };
    }

    /// Closes the channel; true the first time only. Waiting receivers fail with `Closed`
    /// (there is nothing buffered when any wait); waiting senders still deliver.
    pub fn close(ch: *Channel) bool {
        var wakes: [max_wakes]Waiter.Wake = undefined;
        while (true) {
            ch.mutex.lock();
            const first = !ch.closed;
            ch.closed = true;
            var n: usize = 0;
            while (n < max_wakes) : (n += 1) {
                const r = ch.receivers.pop() orelse break;
                wakes[n] = r.complete(done_closed);
            }
            const more = !ch.receivers.isEmpty();
            ch.unlock();
            for (wakes[0..n]) |info| Waiter.wake(info);
            if (!more) return first;
        }
    }

    /// Closes the channel, drops what is buffered and what waiting senders carry (each to
    /// `on_undelivered`), and fails every waiter with `Cancelled`.
    pub fn cancel(ch: *Channel) void {
        var wakes: [max_wakes]Waiter.Wake = undefined;
        while (true) {
            ch.mutex.lock();
            ch.closed = true;
            ch.cancelled = true;
            while (ch.len > 0) {
                ch.undelivered(ch.slot(ch.head));
                ch.head = (ch.head + 1) % ch.slots;
                ch.len -= 1;
            }
            var n: usize = 0;
            while (n < max_wakes) : (n += 1) {
                if (ch.senders.pop()) |s| {
                    ch.undelivered(s.elem);
                    ch.metrics.fail_cancelled += 1;
                    wakes[n] = s.complete(done_cancelled);
                } else if (ch.receivers.pop()) |r| {
                    ch.metrics.fail_cancelled += 1;
                    wakes[n] = r.complete(done_cancelled);
                } else break;
            }
            const more = !ch.senders.isEmpty() or !ch.receivers.isEmpty();
            ch.unlock();
            for (wakes[0..n]) |info| Waiter.wake(info);
            if (!more) return;
        }
    }

    pub fn isClosedForSend(ch: *Channel) bool {
        ch.mutex.lock();
        defer ch.unlock();
        return ch.closed;
    }

    /// Closed, nothing buffered and no sender waiting: a receive can only fail.
    pub fn isClosedForReceive(ch: *Channel) bool {
        ch.mutex.lock();
        defer ch.unlock();
        return ch.closed and ch.len == 0 and ch.senders.isEmpty();
    }

    pub fn snapshot(ch: *Channel) Metrics {
        ch.mutex.lock();
        defer ch.unlock();
        var m = ch.metrics;
        m.taken_ns = scheduler.monotonicNs();
        return m;
    }
};

// ---------------------------------------------------------------------------------------------
// Select: at most one of several send/receive clauses completes.
//
// 1. Lock every channel involved (each once, in address order, so two selects cannot deadlock).
// 2. Probe the clauses, in order (biased, Kotlin) or in a random order (unbiased, Go); the first
//    that can complete does, and the select returns it.
// 3. Otherwise (unless polling) queue a waiter on every clause, all pointing at one
//    `SelectState`, unlock, and wait. A completer on any of those channels must win the
//    select's `winner` CAS before it may complete a clause; losing clauses are skipped and
//    unlinked by whoever meets them. A deadline is a CAS of the winner to `gave_up`.
// 4. Relock and unlink the clauses nobody took. A failed or timed-out select therefore leaves
//    every queue exactly as it found it.

pub const ClauseKind = enum(u8) { send, receive };

pub const Clause = struct {
    ch: *Channel,
    kind: ClauseKind,
    /// Send: the value. Receive: where the value goes.
    elem: [*]u8,
};

pub const SelectOptions = struct {
    /// Absolute deadline (CLOCK_MONOTONIC ns); null = none.
    deadline: ?u64 = null,
    /// A default clause: return error.WouldBlock instead of waiting.
    poll: bool = false,
    /// Probe in a uniformly random order instead of clause order.
    unbiased: bool = false,
    /// Randomness for `unbiased` (default: seeded from the clock).
    random: ?std.Random = null,
};

pub const Selected = struct {
    /// The clause that completed.
    index: u32,
    /// Its outcome: the clause's channel was closed (or cancelled) instead.
    closed: bool = false,
    cancelled: bool = false,
};

pub const max_clauses = 16;

pub const SelectError = error{ WouldBlock, Timeout, InvalidArgument, OutOfMemory };

pub fn select(clauses: []const Clause, options: SelectOptions) SelectError!Selected {
    if (clauses.len == 0 or clauses.len > max_clauses) return error.InvalidArgument;
    const n: u32 = @intCast(clauses.len);
    var order: [max_clauses]u8 = undefined;
    for (0..n) |i| order[i] = @intCast(i);
    if (options.unbiased) {
        var fallback = std.Random.DefaultPrng.init(scheduler.monotonicNs() ^ @intFromPtr(&order));
        const r = options.random orelse fallback.random();
        r.shuffle(u8, order[0..n]);
    }
    var locks: [max_clauses]*Channel = undefined;
    const nlocks = lockSet(clauses, &locks);
    lockAll(locks[0..nlocks]);

    // 2. Probe.
    for (order[0..n]) |i| {
        const c = clauses[i];
        var wake: ?Waiter.Wake = null;
        var closed = false;
        const done = switch (c.kind) {
            .send => switch (c.ch.sendLocked(c.elem, &wake) catch |e| {
                unlockAll(locks[0..nlocks]);
                return e;
            }) {
                .done => true,
                .closed => blk: {
                    closed = true;
                    break :blk true;
                },
                .full => false,
            },
            .receive => switch (c.ch.recvLocked(c.elem, &wake)) {
                .done => true,
                .closed => blk: {
                    closed = true;
                    break :blk true;
                },
                .empty => false,
            },
        };
        if (!done) continue;
        const cancelled = closed and c.ch.cancelled;
        if (closed) c.ch.metrics.fail_closed += 1;
        unlockAll(locks[0..nlocks]);
        if (wake) |info| Waiter.wake(info);
        return .{ .index = i, .closed = closed and !cancelled, .cancelled = cancelled };
    }
    if (options.poll) {
        unlockAll(locks[0..nlocks]);
        return error.WouldBlock;
    }

    // 3. Register on every clause and wait.
    var sel: SelectState = .{};
    const caller = Channel.waiterForCaller(undefined);
    var waiters: [max_clauses]Waiter = undefined;
    for (clauses, 0..) |c, i| {
        waiters[i] = .{ .elem = c.elem, .ref = caller.ref, .sched = caller.sched, .sel = &sel, .clause = @intCast(i) };
        switch (c.kind) {
            .send => c.ch.senders.push(&waiters[i]),
            .receive => c.ch.receivers.push(&waiters[i]),
        }
    }
    unlockAll(locks[0..nlocks]);
    var winner: u32 = SelectState.no_winner;
    if (waitFor(&sel.status, caller.ref, caller.sched, options.deadline)) {
        // Give up, unless a clause won meanwhile (acq_rel: pairs with the claimants' CAS).
        winner = sel.winner.cmpxchgStrong(SelectState.no_winner, SelectState.gave_up, .acq_rel, .acquire) orelse SelectState.gave_up;
        if (winner != SelectState.gave_up) {
            // It won while we were timing out: its completer sets the status right after.
            _ = waitFor(&sel.status, caller.ref, caller.sched, null);
        }
    } else {
        winner = sel.winner.load(.acquire);
    }

    // 4. Unlink the clauses nobody took.
    lockAll(locks[0..nlocks]);
    for (clauses, 0..) |c, i| {
        const w = &waiters[i];
        if (!w.linked) continue;
        switch (c.kind) {
            .send => c.ch.senders.remove(w),
            .receive => c.ch.receivers.remove(w),
        }
    }
    if (winner == SelectState.gave_up) {
        for (locks[0..nlocks]) |ch| ch.metrics.fail_timeout += 1;
    }
    unlockAll(locks[0..nlocks]);
    if (winner == SelectState.gave_up) return error.Timeout;
    assert(winner < n);
    const outcome = sel.status.load(.acquire);
    return .{ .index = winner, .closed = outcome == done_closed, .cancelled = outcome == done_cancelled };
}

/// The distinct channels of `clauses`, sorted by address (the lock order).
fn lockSet(clauses: []const Clause, out: *[max_clauses]*Channel) usize {
    var n: usize = 0;
    for (clauses) |c| {
        const seen = for (out[0..n]) |ch| {
            if (ch == c.ch) break true;
        } else false;
        if (!seen) {
            out[n] = c.ch;
            n += 1;
        }
    }
    std.mem.sort(*Channel, out[0..n], {}, struct {
        fn lt(_: void, a: *Channel, b: *Channel) bool {
            return @intFromPtr(a) < @intFromPtr(b);
        }
    }.lt);
    return n;
}

fn lockAll(chs: []const *Channel) void {
    for (chs) |ch| ch.mutex.lock();
}

fn unlockAll(chs: []const *Channel) void {
    var i = chs.len;
    while (i > 0) {
        i -= 1;
        chs[i].unlock();
    }
}

// ---------------------------------------------------------------------------------------------
// Tests (capacities kept small so that full/empty races show).

const testing = std.testing;

fn sendU64(ch: *Channel, v: u64) Error!void {
    return ch.send(std.mem.asBytes(&v), null, false);
}

fn trySendU64(ch: *Channel, v: u64) Error!void {
    return ch.send(std.mem.asBytes(&v), null, true);
}

fn recvU64(ch: *Channel) Error!u64 {
    var v: u64 = 0;
    try ch.receive(std.mem.asBytes(&v), null, false);
    return v;
}

fn tryRecvU64(ch: *Channel) Error!u64 {
    var v: u64 = 0;
    try ch.receive(std.mem.asBytes(&v), null, true);
    return v;
}

test "buffered channel: FIFO, full, empty" {
    const ch = try Channel.create(testing.allocator, .{ .elem_size = 8, .capacity = 3 });
    defer ch.destroy();
    for (1..4) |v| try trySendU64(ch, v);
    try testing.expectError(error.WouldBlock, trySendU64(ch, 4));
    for (1..4) |v| try testing.expectEqual(@as(u64, v), try tryRecvU64(ch));
    try testing.expectError(error.WouldBlock, tryRecvU64(ch));
    const m = ch.snapshot();
    try testing.expectEqual(@as(u64, 3), m.sends);
    try testing.expectEqual(@as(u64, 3), m.receives);
    try testing.expectEqual(@as(u64, 24), m.bytes_received);
    try testing.expectEqual(@as(u64, 1), m.fail_full);
    try testing.expect(m.first_op_ns != 0 and m.last_op_ns >= m.first_op_ns);
}

const Dropped = struct {
    var vals: [16]u64 = undefined;
    var n: usize = 0;
    fn hook(_: ?*anyopaque, elem: [*]const u8) callconv(.c) void {
        vals[n] = std.mem.bytesToValue(u64, elem[0..8]);
        n += 1;
    }
};

test "rates between two snapshots" {
    const ch = try Channel.create(testing.allocator, .{ .elem_size = 8, .capacity = unlimited });
    defer ch.destroy();
    const a = ch.snapshot();
    for (0..100) |v| try trySendU64(ch, v);
    var b = ch.snapshot();
    b.taken_ns = a.taken_ns + std.time.ns_per_s / 2; // pretend half a second passed
    const r = try Metrics.rates(a, b);
    try testing.expectApproxEqAbs(@as(f64, 200), r.sends, 1e-9);
    try testing.expectApproxEqAbs(@as(f64, 1600), r.bytes_sent, 1e-9);
    try testing.expectApproxEqAbs(@as(f64, 0), r.receives, 1e-9);
    try testing.expectError(error.InvalidArgument, Metrics.rates(b, a));
}

test "drop policies keep the right elements (the issue's example)" {
    // capacity 2: trySend 1,2,3, send 4, receive, trySend 5,6.
    const cases = .{ .{ Overflow.drop_latest, [_]u64{ 1, 2, 5 }, [_]u64{ 3, 4, 6 } }, .{ Overflow.drop_oldest, [_]u64{ 3, 5, 6 }, [_]u64{ 1, 2, 4 } } };
    inline for (cases) |c| {
        Dropped.n = 0;
        const ch = try Channel.create(testing.allocator, .{ .elem_size = 8, .capacity = 2, .overflow = c[0], .on_undelivered = Dropped.hook });
        defer ch.destroy();
        try trySendU64(ch, 1);
        try trySendU64(ch, 2);
        try trySendU64(ch, 3); // a drop still reports ok
        try sendU64(ch, 4); // never suspends
        var got: [3]u64 = undefined;
        got[0] = try recvU64(ch);
        try trySendU64(ch, 5);
        try trySendU64(ch, 6);
        got[1] = try tryRecvU64(ch);
        got[2] = try tryRecvU64(ch);
        const want_got: [3]u64 = c[1];
        const want_dropped: [3]u64 = c[2];
        try testing.expectEqualSlices(u64, &want_got, &got);
        try testing.expectEqualSlices(u64, &want_dropped, Dropped.vals[0..Dropped.n]);
        try testing.expectEqual(@as(u64, 3), ch.snapshot().dropped);
    }
}

test "conflated keeps the latest; it rejects other policies; rendezvous + drop is one slot" {
    const ch = try Channel.create(testing.allocator, .{ .elem_size = 8, .conflated = true });
    defer ch.destroy();
    for (1..6) |v| try trySendU64(ch, v);
    try testing.expectEqual(@as(u64, 5), try tryRecvU64(ch));
    try testing.expectError(error.InvalidArgument, Channel.create(testing.allocator, .{ .elem_size = 8, .conflated = true, .overflow = .drop_latest }));
    const r = try Channel.create(testing.allocator, .{ .elem_size = 8, .capacity = 0, .overflow = .drop_latest });
    defer r.destroy();
    try trySendU64(r, 7);
    try trySendU64(r, 8); // dropped
    try testing.expectEqual(@as(u64, 7), try tryRecvU64(r));
    try testing.expectError(error.InvalidArgument, Channel.create(testing.allocator, .{ .elem_size = 0 }));
}

test "unlimited grows without bound and keeps FIFO" {
    const ch = try Channel.create(testing.allocator, .{ .elem_size = 8, .capacity = unlimited });
    defer ch.destroy();
    for (0..10_000) |v| try trySendU64(ch, v);
    for (0..10_000) |v| try testing.expectEqual(@as(u64, v), try tryRecvU64(ch));
}

test "close: buffered values stay receivable, then Closed; close is true once" {
    const ch = try Channel.create(testing.allocator, .{ .elem_size = 8, .capacity = 4 });
    defer ch.destroy();
    try sendU64(ch, 1);
    try sendU64(ch, 2);
    try testing.expect(ch.close());
    try testing.expect(!ch.close());
    try testing.expectError(error.Closed, sendU64(ch, 3));
    try testing.expect(ch.isClosedForSend());
    try testing.expect(!ch.isClosedForReceive());
    try testing.expectEqual(@as(u64, 1), try recvU64(ch));
    try testing.expectEqual(@as(u64, 2), try recvU64(ch));
    try testing.expect(ch.isClosedForReceive());
    try testing.expectError(error.Closed, recvU64(ch));
    // The lock-free "empty" answer of a try-receive must not hide the close.
    try testing.expectError(error.Closed, tryRecvU64(ch));
}

test "rendezvous across threads, close wakes a blocked receiver, deadline times out cleanly" {
    const ch = try Channel.create(testing.allocator, .{ .elem_size = 8 });
    defer ch.destroy();
    const S = struct {
        fn producer(c: *Channel) void {
            for (0..1000) |v| sendU64(c, v) catch unreachable;
        }
        fn closer(c: *Channel) void {
            // Close once the receiver is blocked (bounded wait; closing earlier is fine too).
            const deadline = scheduler.monotonicNs() + 10 * std.time.ns_per_s;
            while (scheduler.monotonicNs() < deadline) {
                c.mutex.lock();
                const queued = !c.receivers.isEmpty();
                c.mutex.unlock();
                if (queued) break;
                std.Thread.yield() catch {};
            }
            _ = c.close();
        }
    };
    const t = try std.Thread.spawn(.{}, S.producer, .{ch});
    for (0..1000) |v| try testing.expectEqual(@as(u64, v), try recvU64(ch));
    t.join();
    // A receive with a deadline and nobody sending: Timeout, and the queue is left empty.
    var v: u64 = 0;
    const d = scheduler.monotonicNs() + 2 * std.time.ns_per_ms;
    try testing.expectError(error.Timeout, ch.receive(std.mem.asBytes(&v), d, false));
    try testing.expect(ch.receivers.isEmpty());
    try testing.expectEqual(@as(u64, 1), ch.snapshot().fail_timeout);
    const c = try std.Thread.spawn(.{}, S.closer, .{ch});
    try testing.expectError(error.Closed, recvU64(ch));
    c.join();
}

test "a sender already waiting when close happens still delivers" {
    const ch = try Channel.create(testing.allocator, .{ .elem_size = 8 });
    defer ch.destroy();
    const S = struct {
        var result: ?Error = null;
        var sent = std.atomic.Value(bool).init(false);
        fn sender(c: *Channel) void {
            sendU64(c, 42) catch |e| {
                result = e;
            };
            sent.store(true, .release);
        }
    };
    const t = try std.Thread.spawn(.{}, S.sender, .{ch});
    // Wait (bounded) until the sender is queued.
    const deadline = scheduler.monotonicNs() + 10 * std.time.ns_per_s;
    while (true) {
        ch.mutex.lock();
        const queued = !ch.senders.isEmpty();
        ch.unlock();
        if (queued) break;
        if (scheduler.monotonicNs() > deadline) return error.SenderNeverQueued;
        std.Thread.yield() catch {};
    }
    try testing.expect(ch.close());
    try testing.expect(!ch.isClosedForReceive());
    try testing.expectEqual(@as(u64, 42), try recvU64(ch));
    t.join();
    try testing.expect(S.result == null);
    try testing.expectError(error.Closed, recvU64(ch));
}

test "cancel drops buffered and waiting values exactly once and fails every waiter" {
    Dropped.n = 0;
    const ch = try Channel.create(testing.allocator, .{ .elem_size = 8, .capacity = 2, .on_undelivered = Dropped.hook });
    defer ch.destroy();
    try sendU64(ch, 1);
    try sendU64(ch, 2);
    const S = struct {
        var result = std.atomic.Value(u32).init(0);
        fn sender(c: *Channel) void {
            sendU64(c, 3) catch |e| {
                if (e == error.Cancelled) _ = result.fetchAdd(1, .monotonic);
            };
        }
    };
    S.result.store(0, .monotonic);
    const t = try std.Thread.spawn(.{}, S.sender, .{ch});
    const deadline = scheduler.monotonicNs() + 10 * std.time.ns_per_s;
    while (true) {
        ch.mutex.lock();
        const queued = !ch.senders.isEmpty();
        ch.unlock();
        if (queued) break;
        if (scheduler.monotonicNs() > deadline) return error.SenderNeverQueued;
        std.Thread.yield() catch {};
    }
    ch.cancel();
    t.join();
    try testing.expectEqual(@as(u32, 1), S.result.load(.monotonic));
    std.mem.sort(u64, Dropped.vals[0..Dropped.n], {}, std.sort.asc(u64));
    try testing.expectEqualSlices(u64, &.{ 1, 2, 3 }, Dropped.vals[0..Dropped.n]);
    try testing.expectError(error.Cancelled, recvU64(ch));
    try testing.expectError(error.Cancelled, sendU64(ch, 9));
}

// N producers x M consumers on coroutines of a scheduler: every value received exactly once.
test "N producers x M consumers, every kind, scheduled coroutines: each value exactly once" {
    const per_producer = 2_000;
    const Ctx = struct {
        ch: *Channel,
        producers: u32,
        seen: []std.atomic.Value(u8),
        received: std.atomic.Value(u32) = .init(0),
        producers_left: std.atomic.Value(u32),
        id: u32 = 0,
    };
    const S = struct {
        fn producer(arg: ?*anyopaque) callconv(.c) void {
            const p: *[2]usize = @ptrCast(@alignCast(arg.?));
            const ctx: *Ctx = @ptrFromInt(p[0]);
            const id = p[1];
            for (0..per_producer) |i| sendU64(ctx.ch, id * per_producer + i) catch unreachable;
            if (ctx.producers_left.fetchSub(1, .acq_rel) == 1) _ = ctx.ch.close();
        }
        fn consumer(arg: ?*anyopaque) callconv(.c) void {
            const ctx: *Ctx = @ptrCast(@alignCast(arg.?));
            while (true) {
                const v = recvU64(ctx.ch) catch |e| switch (e) {
                    error.Closed => return,
                    else => unreachable,
                };
                _ = ctx.seen[v].fetchAdd(1, .monotonic);
                _ = ctx.received.fetchAdd(1, .monotonic);
            }
        }
    };
    const shapes = [_]struct { cap: u32, np: u32, nc: u32 }{
        .{ .cap = 0, .np = 1, .nc = 1 },
        .{ .cap = 0, .np = 8, .nc = 3 },
        .{ .cap = 2, .np = 3, .nc = 8 },
        .{ .cap = 64, .np = 5, .nc = 5 },
        .{ .cap = unlimited, .np = 4, .nc = 2 },
    };
    var s: scheduler.Scheduler = undefined;
    try s.start(testing.allocator, .{ .workers = 2, .stack_size = 32 * 1024 });
    defer s.shutdown(.cancel);
    for (shapes) |shape| {
        const total = shape.np * per_producer;
        const seen = try testing.allocator.alloc(std.atomic.Value(u8), total);
        defer testing.allocator.free(seen);
        for (seen) |*x| x.* = .init(0);
        const ch = try Channel.create(testing.allocator, .{ .elem_size = 8, .capacity = shape.cap });
        defer ch.destroy();
        var ctx: Ctx = .{ .ch = ch, .producers = shape.np, .seen = seen, .producers_left = .init(shape.np) };
        var args: [8][2]usize = undefined;
        for (0..shape.nc) |_| _ = try s.spawn(S.consumer, &ctx);
        for (0..shape.np) |i| {
            args[i] = .{ @intFromPtr(&ctx), i };
            _ = try s.spawn(S.producer, &args[i]);
        }
        try s.drainFor(60 * std.time.ns_per_s);
        try testing.expectEqual(total, ctx.received.load(.monotonic));
        for (seen) |*x| try testing.expectEqual(@as(u8, 1), x.load(.monotonic));
    }
}

test "select: biased picks the first ready clause; polling is the default clause" {
    const a = try Channel.create(testing.allocator, .{ .elem_size = 8, .capacity = 4 });
    defer a.destroy();
    const b = try Channel.create(testing.allocator, .{ .elem_size = 8, .capacity = 4 });
    defer b.destroy();
    var x: u64 = 0;
    var y: u64 = 0;
    const clauses = [_]Clause{
        .{ .ch = a, .kind = .receive, .elem = std.mem.asBytes(&x) },
        .{ .ch = b, .kind = .receive, .elem = std.mem.asBytes(&y) },
    };
    try testing.expectError(error.WouldBlock, select(&clauses, .{ .poll = true }));
    try trySendU64(b, 20);
    try testing.expectEqual(@as(u32, 1), (try select(&clauses, .{})).index);
    try testing.expectEqual(@as(u64, 20), y);
    for (0..3) |_| {
        try trySendU64(a, 10);
        try trySendU64(b, 21);
    }
    for (0..3) |_| try testing.expectEqual(@as(u32, 0), (try select(&clauses, .{})).index);
    // A send clause and a closed clause.
    var v: u64 = 5;
    const send_clause = [_]Clause{.{ .ch = a, .kind = .send, .elem = std.mem.asBytes(&v) }};
    try testing.expectEqual(@as(u32, 0), (try select(&send_clause, .{})).index);
    try testing.expectEqual(@as(u64, 5), try tryRecvU64(a));
    _ = a.close();
    const closed = try select(&clauses, .{});
    try testing.expect(closed.index == 0 and closed.closed);
}

test "select: unbiased picks each of two always-ready clauses about half the time" {
    const a = try Channel.create(testing.allocator, .{ .elem_size = 8, .capacity = 1 });
    defer a.destroy();
    const b = try Channel.create(testing.allocator, .{ .elem_size = 8, .capacity = 1 });
    defer b.destroy();
    var x: u64 = 0;
    const clauses = [_]Clause{
        .{ .ch = a, .kind = .receive, .elem = std.mem.asBytes(&x) },
        .{ .ch = b, .kind = .receive, .elem = std.mem.asBytes(&x) },
    };
    var prng = std.Random.DefaultPrng.init(0x5eed);
    const rounds = 10_000;
    var first: u32 = 0;
    try trySendU64(a, 1);
    try trySendU64(b, 2);
    for (0..rounds) |_| {
        const got = try select(&clauses, .{ .unbiased = true, .random = prng.random() });
        if (got.index == 0) {
            first += 1;
            try trySendU64(a, 1);
        } else try trySendU64(b, 2);
    }
    // Binomial(10,000, 1/2): sigma = 50; allow 10 sigma.
    try testing.expect(first > rounds / 2 - 500 and first < rounds / 2 + 500);
}

test "select: a timed-out select leaves every queue intact" {
    const a = try Channel.create(testing.allocator, .{ .elem_size = 8 });
    defer a.destroy();
    const b = try Channel.create(testing.allocator, .{ .elem_size = 8, .capacity = 2 });
    defer b.destroy();
    var x: u64 = 0;
    var v: u64 = 1;
    try trySendU64(b, 1);
    try trySendU64(b, 2); // b is full: a send clause on it must wait
    const clauses = [_]Clause{
        .{ .ch = a, .kind = .receive, .elem = std.mem.asBytes(&x) },
        .{ .ch = b, .kind = .send, .elem = std.mem.asBytes(&v) },
        .{ .ch = a, .kind = .receive, .elem = std.mem.asBytes(&x) }, // the same channel twice
    };
    const deadline = scheduler.monotonicNs() + 2 * std.time.ns_per_ms;
    try testing.expectError(error.Timeout, select(&clauses, .{ .deadline = deadline }));
    try testing.expect(a.receivers.isEmpty() and a.senders.isEmpty());
    try testing.expect(b.receivers.isEmpty() and b.senders.isEmpty());
    try testing.expectEqual(@as(u64, 1), try tryRecvU64(b)); // b untouched: 1, 2
    try testing.expectEqual(@as(u64, 2), try tryRecvU64(b));
    try testing.expectError(error.InvalidArgument, select(&.{}, .{}));
}

// Selects and plain receivers race for values from senders on two channels (and selects also
// offer a send clause to a third): every value is received exactly once, so no select ever
// completed two clauses, and every queue ends empty.
test "select: stress with plain operations on scheduled coroutines, each value exactly once" {
    const per_sender = 3_000;
    const senders_per_chan = 2;
    const total = 2 * senders_per_chan * per_sender;
    const S = struct {
        var chans: [2]*Channel = undefined;
        var side: *Channel = undefined;
        var seen: [total]std.atomic.Value(u8) = @splat(.init(0));
        var received = std.atomic.Value(u32).init(0);
        var side_taken = std.atomic.Value(u32).init(0);
        var senders_left = std.atomic.Value(u32).init(0);
        fn sender(arg: ?*anyopaque) callconv(.c) void {
            const id = @intFromPtr(arg);
            const ch = chans[id % 2];
            for (0..per_sender) |i| sendU64(ch, id * per_sender + i) catch unreachable;
            if (senders_left.fetchSub(1, .acq_rel) == 1) {
                _ = chans[0].close();
                _ = chans[1].close();
                _ = side.close();
            }
        }
        fn selector(_: ?*anyopaque) callconv(.c) void {
            var x: u64 = 0;
            var y: u64 = 0;
            var offer: u64 = 0;
            var open = [3]bool{ true, true, true };
            while (open[0] or open[1]) {
                var clauses: [3]Clause = undefined;
                var map: [3]u8 = undefined;
                var n: usize = 0;
                if (open[0]) {
                    clauses[n] = .{ .ch = chans[0], .kind = .receive, .elem = std.mem.asBytes(&x) };
                    map[n] = 0;
                    n += 1;
                }
                if (open[1]) {
                    clauses[n] = .{ .ch = chans[1], .kind = .receive, .elem = std.mem.asBytes(&y) };
                    map[n] = 1;
                    n += 1;
                }
                if (open[2]) {
                    clauses[n] = .{ .ch = side, .kind = .send, .elem = std.mem.asBytes(&offer) };
                    map[n] = 2;
                    n += 1;
                }
                const got = select(clauses[0..n], .{ .unbiased = true }) catch unreachable;
                const which = map[got.index];
                if (got.closed) {
                    open[which] = false;
                    continue;
                }
                if (which == 2) continue; // a sideReader took our offer
                const v = if (which == 0) x else y;
                _ = seen[v].fetchAdd(1, .monotonic);
                _ = received.fetchAdd(1, .monotonic);
            }
        }
        fn plain(arg: ?*anyopaque) callconv(.c) void {
            const ch = chans[@intFromPtr(arg)];
            while (true) {
                const v = recvU64(ch) catch return;
                _ = seen[v].fetchAdd(1, .monotonic);
                _ = received.fetchAdd(1, .monotonic);
            }
        }
        fn sideReader(_: ?*anyopaque) callconv(.c) void {
            while (true) {
                _ = recvU64(side) catch return;
                _ = side_taken.fetchAdd(1, .monotonic);
            }
        }
    };
    S.chans[0] = try Channel.create(testing.allocator, .{ .elem_size = 8 });
    defer S.chans[0].destroy();
    S.chans[1] = try Channel.create(testing.allocator, .{ .elem_size = 8, .capacity = 2 });
    defer S.chans[1].destroy();
    S.side = try Channel.create(testing.allocator, .{ .elem_size = 8 });
    defer S.side.destroy();
    for (&S.seen) |*x| x.store(0, .monotonic);
    S.received.store(0, .monotonic);
    S.senders_left.store(2 * senders_per_chan, .monotonic);
    var s: scheduler.Scheduler = undefined;
    try s.start(testing.allocator, .{ .workers = 2, .stack_size = 32 * 1024 });
    defer s.shutdown(.cancel);
    for (0..3) |_| _ = try s.spawn(S.selector, null);
    _ = try s.spawn(S.plain, @ptrFromInt(0));
    _ = try s.spawn(S.plain, @ptrFromInt(1));
    _ = try s.spawn(S.sideReader, null);
    for (0..2 * senders_per_chan) |id| _ = try s.spawn(S.sender, @ptrFromInt(id));
    try s.drainFor(60 * std.time.ns_per_s);
    try testing.expectEqual(@as(u32, total), S.received.load(.monotonic));
    for (&S.seen) |*x| try testing.expectEqual(@as(u8, 1), x.load(.monotonic));
    for ([_]*Channel{ S.chans[0], S.chans[1], S.side }) |ch| {
        try testing.expect(ch.receivers.isEmpty() and ch.senders.isEmpty());
    }
}

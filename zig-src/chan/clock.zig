//! A shared coarse clock for the channel counters' first/last-operation timestamps.
//!
//! Reading even CLOCK_MONOTONIC_COARSE costs ~3 ns, a quarter of an uncontended channel
//! operation; the counters must cost under 5%. So operations read one shared word instead,
//! which a ticker thread refreshes every millisecond (the coarse clock itself only moves every
//! 1-4 ms). The ticker starts on first use and ends after `idle_ticks` ticks in which no
//! operation read the word; the next read then starts it again. Readers only write the shared
//! "used" flag when they find it clear (once per tick), so the line stays read-shared.
//!
//! Resolution: a timestamp is at most one tick plus the coarse clock's own granularity old.
//! Any thread may call `now`.
const std = @import("std");
const Futex = std.Thread.Futex;

const tick_ns: u64 = std.time.ns_per_ms;
/// Ticks without a reader before the ticker ends (100 ms).
const idle_ticks = 100;

/// The time as of the last tick; 0 while no ticker runs.
var cached: std.atomic.Value(u64) = .init(0);
/// Set by a reader (when clear), cleared by the ticker each tick.
var used: std.atomic.Value(bool) = .init(false);
/// 0 idle, 1 running (or starting). CAS from 0 to 1 starts a ticker.
var state: std.atomic.Value(u32) = .init(0);

/// Coarse monotonic time in ns (CLOCK_MONOTONIC_COARSE, as `preciseCoarse`).
pub fn now() u64 {
    // Monotonic: a timestamp for statistics; nothing is published through it.
    const t = cached.load(.monotonic);
    if (t != 0) {
        if (!used.load(.monotonic)) used.store(true, .monotonic);
        return t;
    }
    start();
    return preciseCoarse();
}

pub fn preciseCoarse() u64 {
    const ts = std.posix.clock_gettime(.MONOTONIC_COARSE) catch return 0;
    return @as(u64, @intCast(ts.sec)) * std.time.ns_per_s + @as(u64, @intCast(ts.nsec));
}

/// Whether a ticker runs (tests).
pub fn running() bool {
    return state.load(.acquire) != 0;
}

fn start() void {
    // Acq_rel: one starter wins; pairs with the ticker's release store of 0 when it ends.
    if (state.cmpxchgStrong(0, 1, .acq_rel, .monotonic) != null) return;
    const t = std.Thread.spawn(.{ .stack_size = 16 * 1024 }, run, .{}) catch {
        state.store(0, .release);
        return; // no ticker: readers keep reading the clock themselves
    };
    t.detach();
}

fn run() void {
    var idle: u32 = 0;
    cached.store(preciseCoarse(), .monotonic);
    used.store(true, .monotonic);
    var dummy: std.atomic.Value(u32) = .init(0);
    while (true) {
        Futex.timedWait(&dummy, 0, tick_ns) catch {};
        if (used.swap(false, .monotonic)) {
            idle = 0;
        } else {
            idle += 1;
            if (idle >= idle_ticks) break;
        }
        cached.store(preciseCoarse(), .monotonic);
    }
    cached.store(0, .monotonic);
    state.store(0, .release); // pairs with `start`'s CAS
}

test "the cached clock moves, never backwards, and the ticker starts on use" {
    const a = now();
    try std.testing.expect(a > 0);
    const deadline = preciseCoarse() + 10 * std.time.ns_per_s;
    var b = now();
    while (b == a and preciseCoarse() < deadline) : (b = now()) std.Thread.yield() catch {};
    try std.testing.expect(b > a);
    try std.testing.expect(running());
}

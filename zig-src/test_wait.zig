//! Bounded waits for tests that wait on another thread: the Zig test runner has no per-test
//! timeout, so a wait that never ends (the other thread stuck because the code under test is
//! wrong) hung the whole run until CI's 90-minute limit, instead of failing. Every such wait
//! goes through a `Deadline`: past it, the test fails with `error.Timeout` and a line on stderr
//! saying what it waited for.
//!
//!     const d = test_wait.Deadline.in(5 * std.time.ns_per_s, "the pipe thread to end");
//!     while (pipes.threadRunning()) try d.wait();
//!
//! A thread the test started and must join goes through `Joiner` (the thread sets its flag as
//! it returns): a thread that never ends cannot be joined, and cannot be left running either, on
//! the test's stack frame or holding a lock later tests need, so `Joiner.join` panics past its
//! deadline (the test binary ends at once, saying what hung) instead of returning.
//!
//! Where the waits cannot all carry a deadline (joins of threads that block in the code under
//! test, a scheduler's drain, a lock a deadlock would hold), a `Watchdog` bounds the test as a
//! whole: started first and stopped by a `defer`, it panics, naming the test, if the test is
//! still running when it expires. Not in a test that forks (qemu-user aborts a forked child
//! whose parent has another thread: `forkedThreadsOk` in sched/scheduler.zig).
//!
//!     const wd = try test_wait.Watchdog.arm(@src(), test_wait.default_ns);
//!     defer wd.stop();
//!
//! (`arm` puts it in memory of its own; `start` arms one the caller keeps in place.)
const std = @import("std");

/// Default bound of a wait on another thread: generous for a loaded machine (qemu-user on a
/// shared 2-vCPU host runs tests several times slower), short against a hang.
pub const default_ns: u64 = 30 * std.time.ns_per_s;
/// A `Watchdog`'s bound for a whole test, and for a stress test (many rounds, under qemu-user
/// too): far above what they take, far below CI's 90 minutes.
pub const test_ns: u64 = 120 * std.time.ns_per_s;
pub const stress_ns: u64 = 600 * std.time.ns_per_s;

fn nowNs() u64 {
    const ts = std.posix.clock_gettime(.MONOTONIC) catch return 0;
    return @as(u64, @intCast(ts.sec)) * std.time.ns_per_s + @as(u64, @intCast(ts.nsec));
}

pub const Deadline = struct {
    end_ns: u64,
    what: []const u8,

    /// A deadline `ns` from now, for a wait on `what` (said when it passes; "" says nothing).
    pub fn in(ns: u64, what: []const u8) Deadline {
        return .{ .end_ns = nowNs() +| ns, .what = what };
    }

    /// One round of a wait loop: yields the CPU, or, once past the deadline, says what it
    /// waited for and fails with `error.Timeout`.
    pub fn wait(d: Deadline) error{Timeout}!void {
        if (d.passed()) {
            if (d.what.len != 0) std.debug.print("timed out waiting for {s}\n", .{d.what});
            return error.Timeout;
        }
        std.Thread.yield() catch {};
    }

    pub fn passed(d: Deadline) bool {
        return nowNs() >= d.end_ns;
    }

    /// Nanoseconds left (0 once past).
    pub fn left(d: Deadline) u64 {
        return d.end_ns -| nowNs();
    }
};

/// A coroutine body that never yields (a caller's C code, computing) until the test lets it go:
/// it holds its worker, so no shutdown can join that worker meanwhile. One test at a time
/// (its state is static): `reset` first; `letGo` before the scheduler's last shutdown.
pub const NeverYields = struct {
    var release = std.atomic.Value(bool).init(false);
    var running = std.atomic.Value(bool).init(false);

    pub fn reset() void {
        release.store(false, .monotonic);
        running.store(false, .monotonic);
    }

    pub fn body(_: ?*anyopaque) callconv(.c) void {
        running.store(true, .release); // pairs with `awaitRunning`'s acquire load
        // Acquire: pairs with `letGo`'s release store (nothing else to see; tidy).
        while (!release.load(.acquire)) std.atomic.spinLoopHint();
    }

    /// Waits until `body` runs (holding its worker), failing after `default_ns`.
    pub fn awaitRunning() error{Timeout}!void {
        const d = Deadline.in(default_ns, "the never-yielding coroutine to run");
        while (!running.load(.acquire)) try d.wait();
    }

    /// Ends `body`'s spin: it returns.
    pub fn letGo() void {
        release.store(true, .release);
    }
};

/// A thread a test joins within a deadline: its function calls `done` as it returns (`defer`).
pub const Joiner = struct {
    finished: std.atomic.Value(bool) = .init(false),

    /// The thread's last act.
    pub fn done(j: *Joiner) void {
        // Release: pairs with `join`'s acquire load; everything the thread did is seen after.
        j.finished.store(true, .release);
    }

    /// Joins `t` once it called `done`; past `ns`, panics naming `what` (see the file header:
    /// returning would leave the thread running on the caller's frame).
    pub fn join(j: *Joiner, t: std.Thread, ns: u64, what: []const u8) void {
        const d = Deadline.in(ns, what);
        // Acquire: pairs with `done`.
        while (!j.finished.load(.acquire)) {
            if (d.passed()) std.debug.panic("timed out after {d} ms waiting for {s} to end (hung?)", .{ ns / std.time.ns_per_ms, what });
            std.Thread.yield() catch {};
        }
        t.join(); // it is returning: a moment at most
    }
};

/// The scheduling state of this process's thread `tid` (/proc/self/task/<tid>/stat's third
/// field: 'R' running or runnable, 'S' asleep, ...), for tests; null if it cannot be read.
pub fn threadState(tid: std.Thread.Id) ?u8 {
    var path_buf: [64]u8 = undefined;
    const path = std.fmt.bufPrint(&path_buf, "/proc/self/task/{d}/stat", .{tid}) catch return null;
    var buf: [512]u8 = undefined;
    const stat = std.fs.cwd().readFile(path, &buf) catch return null;
    // "tid (comm) S ...": the name may hold spaces and parentheses; the state follows the last ')'.
    const close = std.mem.lastIndexOfScalar(u8, stat, ')') orelse return null;
    if (close + 2 >= stat.len) return null;
    return stat[close + 2];
}

/// A forked child's end: its `waitpid` result, within `ns` of the monotonic clock (a
/// `Deadline`). Polled (WNOHANG) every `poll_ns` until then: a child that hangs (the code under
/// test stuck, a panic that deadlocks) is killed (SIGKILL), reaped, and the test fails with
/// `error.Timeout`, saying `what` ("" says nothing). A plain `waitpid(pid, 0)` waited for it for
/// ever, and the whole run with it. Before, the bound was a number of polls, whose sleeps a
/// loaded host stretches: the wait then lasted longer than `ns`, by however much they overslept.
pub fn waitChild(pid: std.posix.pid_t, ns: u64, what: []const u8) error{Timeout}!std.posix.WaitPidResult {
    const d = Deadline.in(ns, "");
    while (true) {
        const res = std.posix.waitpid(pid, std.posix.W.NOHANG);
        if (res.pid == pid) return res;
        const left = d.left();
        if (left == 0) break;
        std.Thread.sleep(@min(left, poll_ns)); // the poll's interval, not a synchronisation
    }
    std.posix.kill(pid, std.posix.SIG.KILL) catch {};
    _ = std.posix.waitpid(pid, 0); // killed: it ends at once
    if (what.len != 0) std.debug.print("timed out after {d} ms waiting for {s} (killed)\n", .{ ns / std.time.ns_per_ms, what });
    return error.Timeout;
}

/// `waitChild`'s interval between two polls.
const poll_ns: u64 = 5 * std.time.ns_per_ms;

/// What a forked child writes to the pipe whose read end is `fd`, into `buf` (what fits), until
/// the child ends (its end closes the pipe: the caller closed its own write end), then its
/// `waitChild` result: both within one deadline `ns` from now. A child that neither writes nor
/// ends is killed at the deadline (`waitChild` with what is left of it: none), and the test
/// fails with `error.Timeout`; so does one that writes more than `buf` holds and hangs. Returns
/// the bytes read and the result.
pub fn childOutput(pid: std.posix.pid_t, fd: std.posix.fd_t, buf: []u8, ns: u64, what: []const u8) !struct { []u8, std.posix.WaitPidResult } {
    const d = Deadline.in(ns, "");
    const len = readUntilEnd(fd, buf, d) catch |err| {
        _ = waitChild(pid, 0, "") catch {}; // killed and reaped, not left behind
        return err;
    };
    return .{ buf[0..len], try waitChild(pid, d.left(), what) };
}

/// `childOutput`'s reads: the bytes read into `buf` until the pipe ends, `buf` is full or `d`
/// passes.
fn readUntilEnd(fd: std.posix.fd_t, buf: []u8, d: Deadline) !usize {
    var len: usize = 0;
    while (len < buf.len) {
        const left = d.left();
        if (left == 0) break;
        var pfd = [_]std.posix.pollfd{.{ .fd = fd, .events = std.posix.POLL.IN, .revents = 0 }};
        const ms: i32 = @intCast(@min(left / std.time.ns_per_ms + 1, 1000));
        if (try std.posix.poll(&pfd, ms) == 0) continue;
        const n = try std.posix.read(fd, buf[len..]);
        if (n == 0) break; // the child ended: its end closed the pipe
        len += n;
    }
    return len;
}

/// Bounds a test as a whole (see the file header).
pub const Watchdog = struct {
    /// 0 while armed; `stop` sets it (a futex word the watchdog sleeps on).
    stopped: std.atomic.Value(u32) = .init(0),
    thread: ?std.Thread = null,
    src: std.builtin.SourceLocation = undefined,
    ns: u64 = 0,
    /// Made by `arm` (or `armIn`) in this allocator's memory: `stop` frees it there.
    owner: ?std.mem.Allocator = null,

    /// A watchdog in memory of its own, armed for `ns` (see `start`): a test's preamble is
    /// this and a `defer` of its `stop`, which frees it.
    pub fn arm(src: std.builtin.SourceLocation, ns: u64) !*Watchdog {
        return armIn(std.heap.page_allocator, src, ns);
    }

    /// `arm` in `allocator`'s memory (a test of the watchdog itself: the leak-checking
    /// allocator, so a `stop` that does not free it fails).
    pub fn armIn(allocator: std.mem.Allocator, src: std.builtin.SourceLocation, ns: u64) !*Watchdog {
        const w = try allocator.create(Watchdog);
        errdefer allocator.destroy(w);
        try w.start(src, ns);
        w.owner = allocator; // after `start`, which sets every field; its thread never reads this one
        return w;
    }

    /// Arms it for `ns`, naming the test at `src` (`@src()`) when it expires. `w` must stay put
    /// until `stop`.
    pub fn start(w: *Watchdog, src: std.builtin.SourceLocation, ns: u64) !void {
        w.* = .{ .src = src, .ns = ns };
        w.thread = try std.Thread.spawn(.{}, watch, .{w}); // the default stack: a panic's trace needs room
    }

    fn watch(w: *Watchdog) void {
        const d = Deadline.in(w.ns, "");
        // Acquire: pairs with `stop`'s release (nothing is published through it; tidy).
        while (w.stopped.load(.acquire) == 0) {
            const left = d.left();
            if (left == 0) std.debug.panic("watchdog: {s} ({s}:{d}) still running after {d} ms (hung?)", .{
                w.src.fn_name, w.src.file, w.src.line, w.ns / std.time.ns_per_ms,
            });
            std.Thread.Futex.timedWait(&w.stopped, 0, left) catch {};
        }
    }

    /// Disarms it and joins its thread (at once: it sleeps on `stopped`).
    pub fn stop(w: *Watchdog) void {
        // Release: see `watch`.
        w.stopped.store(1, .release);
        std.Thread.Futex.wake(&w.stopped, 1);
        w.thread.?.join();
        w.thread = null;
        if (w.owner) |a| a.destroy(w); // its thread ended: nothing reads it
    }
};

test "a deadline fails a wait past it; a joiner joins a thread that ends" {
    const d = Deadline.in(std.time.ns_per_ms, "");
    var n: usize = 0;
    const r = while (true) : (n += 1) d.wait() catch |err| break err;
    try std.testing.expectEqual(error.Timeout, r);
    try std.testing.expect(d.passed() and d.left() == 0);
    var j: Joiner = .{};
    const T = struct {
        fn go(jj: *Joiner) void {
            defer jj.done();
        }
    };
    const t = try std.Thread.spawn(.{}, T.go, .{&j});
    j.join(t, default_ns, "a thread that returns at once");
}

test "a watchdog stopped in time does nothing" {
    var wd: Watchdog = .{};
    try wd.start(@src(), default_ns);
    defer wd.stop();
    std.Thread.yield() catch {};
}

test "an armed watchdog stopped in time does nothing, and frees itself" {
    // The leak-checking allocator: a `stop` that left it allocated fails the test.
    const wd = try Watchdog.armIn(std.testing.allocator, @src(), default_ns);
    defer wd.stop();
    try std.testing.expect(wd.owner != null and wd.thread != null);
}

test "waitChild: a child that ends is reaped; one that hangs is killed and the wait fails" {
    const quick = try std.posix.fork();
    if (quick == 0) std.posix.exit(3);
    const res = try waitChild(quick, default_ns, "a child that exits at once");
    try std.testing.expect(std.posix.W.IFEXITED(res.status));
    try std.testing.expectEqual(@as(u32, 3), std.posix.W.EXITSTATUS(res.status));
    // Hangs until killed: the bounded wait fails, and no child is left behind.
    const hung = try std.posix.fork();
    if (hung == 0) while (true) std.Thread.sleep(std.time.ns_per_s);
    try std.testing.expectError(error.Timeout, waitChild(hung, 20 * std.time.ns_per_ms, ""));
    var st: c_int = 0;
    try std.testing.expectEqual(@as(std.c.pid_t, -1), std.c.waitpid(hung, &st, std.posix.W.NOHANG)); // reaped
}

test "childOutput: what a child wrote and its end, within one bound; one that neither writes nor ends is killed" {
    var buf: [64]u8 = undefined;
    {
        const fds = try std.posix.pipe();
        const pid = try std.posix.fork();
        if (pid == 0) {
            std.posix.close(fds[0]);
            _ = std.posix.write(fds[1], "said") catch std.posix.exit(2);
            std.posix.exit(5);
        }
        std.posix.close(fds[1]);
        defer std.posix.close(fds[0]);
        const text, const res = try childOutput(pid, fds[0], &buf, default_ns, "a child that writes and exits");
        try std.testing.expectEqualStrings("said", text);
        try std.testing.expect(std.posix.W.IFEXITED(res.status));
        try std.testing.expectEqual(@as(u32, 5), std.posix.W.EXITSTATUS(res.status));
    }
    // Never writes, never ends (its write end open): the bound passes, it is killed and reaped.
    const fds = try std.posix.pipe();
    const hung = try std.posix.fork();
    if (hung == 0) while (true) std.Thread.sleep(std.time.ns_per_s);
    std.posix.close(fds[1]);
    defer std.posix.close(fds[0]);
    try std.testing.expectError(error.Timeout, childOutput(hung, fds[0], &buf, 20 * std.time.ns_per_ms, ""));
    var st: c_int = 0;
    try std.testing.expectEqual(@as(std.c.pid_t, -1), std.c.waitpid(hung, &st, std.posix.W.NOHANG)); // reaped
}

//! Tests that hang on purpose, for the test runner's watchdog (zig-src/testing/runner.zig):
//! `zig build test -Dtest-hang=true` builds this file instead of the unit tests, and
//! tests/zig_runner_test.ts runs it with a short KCORO_TEST_TIMEOUT_S. Not in ./task test.
//!
//! KCORO_TEST_HANG=exit: the second test passes but leaves an atexit handler that never
//! returns, so the process hangs in its exit after the last test instead (what a thread left
//! running that holds a lock `exit` takes does). KCORO_TEST_HANG=race: nothing hangs; the third
//! test races on purpose, for the runner's ThreadSanitizer check (`zig build test
//! -Dtest-hang=true -Dtsan=true`), and the last forks a child that exits 0 after it.
const std = @import("std");

test "passes before the hang" {
    try std.testing.expect(true);
}

test "hangs on purpose: joins a thread that never ends" {
    if (std.posix.getenv("KCORO_TEST_HANG")) |mode| if (mode.len != 0) {
        if (std.mem.eql(u8, mode, "exit")) {
            if (atexit(&blockForever) != 0) return error.AtexitFailed;
        }
        return; // another case's
    };
    const t = try std.Thread.spawn(.{}, blockForever, .{});
    t.join();
}

test "races on purpose, then skips: two threads add to a plain word (KCORO_TEST_HANG=race)" {
    const mode = std.posix.getenv("KCORO_TEST_HANG") orelse return;
    if (!std.mem.eql(u8, mode, "race")) return;
    const S = struct {
        var word: u64 = 0;
        fn add() void {
            word += 1; // unordered with the other thread's: a data race to ThreadSanitizer
        }
    };
    const t = try std.Thread.spawn(.{}, S.add, .{});
    S.add();
    t.join();
    // Counted failed, not also skipped (the build runner counts each flag it is sent).
    return error.SkipZigTest;
}

test "after the race, a forked child that exits 0 passes (KCORO_TEST_HANG=race)" {
    const mode = std.posix.getenv("KCORO_TEST_HANG") orelse return;
    if (!std.mem.eql(u8, mode, "race")) return;
    // The child inherits the sanitizer's count of reports (the race above): it exited with the
    // sanitizer's status 66 at its `exit`, before the runner's `__tsan_on_finalize`.
    const pid = try std.posix.fork();
    if (pid == 0) std.posix.exit(0);
    const res = std.posix.waitpid(pid, 0); // it exits at once
    try std.testing.expect(std.posix.W.IFEXITED(res.status));
    try std.testing.expectEqual(@as(u32, 0), std.posix.W.EXITSTATUS(res.status));
}

extern "c" fn atexit(func: *const fn () callconv(.c) void) c_int;

fn blockForever() callconv(.c) void {
    while (true) std.Thread.sleep(std.time.ns_per_s);
}

//! kcoro's test runner for the Zig unit tests (build.zig, `test_runner`): Zig 0.15.2's own
//! (lib/compiler/test_runner.zig) with a watchdog added. The standard one's behaviour is kept:
//! the build runner's protocol (`zig build test`, its "N/M tests passed" summary, which
//! scripts/test.sh counts), the leak-checking `std.testing.allocator` per test, `-Dtest-filter`,
//! the terminal mode (zig-out/bin/kcoro-test run by hand).
//!
//! What is added, all marked "kcoro:" below:
//! - A watchdog thread, always: a test that runs past KCORO_TEST_TIMEOUT_S seconds (default
//!   300, generous for qemu) makes it print "kcoro test watchdog: <test name> ran past Ns" to
//!   stderr and end the process with status 3. A failed test that left a worker thread running
//!   could make a later test, or the whole binary, hang: CI's 30-minute bound (scripts/test.sh)
//!   then killed it without saying which test hung.
//! - The exit after the last test is bounded too (by the same number, at most 30 s): libc's
//!   `exit` runs atexit handlers and takes stdio locks, which a thread left running may hold.
//! - KCORO_TEST_VERBOSE (set, and not "" or "0"): each test's name to stderr as it starts.
//! - KCORO_TEST_SKIP: tests not to run, reported skipped: each named by a part of its name, the
//!   parts separated by "|". scripts/test.sh skips so, under qemu, the slow tests that exercise
//!   nothing of the architecture (they ran in its x86_64 stages).
//! - Under ThreadSanitizer (-Dtsan=true), a test in which it reported fails, by name. Before,
//!   the report only made the binary's exit status 66, and a forked child inherits the count of
//!   reports, so the first test to fail was a later one whose child exited 66 instead of its own
//!   status (test_wait's waitChild and childOutput tests), far from the race reported.
//! - Under ThreadSanitizer, a forked child's exit status is the sanitizer's (66) only if it
//!   reported in the child: the reports it inherited stay the parent's, charged to their test.
//!   Before, after one report every later test whose child exited failed on that 66.
//!
//! zig-src/testing/hang_test.zig hangs on purpose (`zig build test -Dtest-hang=true`);
//! tests/zig_runner_test.ts runs it.
const builtin = @import("builtin");

const std = @import("std");
const testing = std.testing;
const assert = std.debug.assert;

pub const std_options: std.Options = .{
    .logFn = log,
};

var log_err_count: usize = 0;
var fba = std.heap.FixedBufferAllocator.init(&fba_buffer);
var fba_buffer: [8192]u8 = undefined;
var stdin_buffer: [4096]u8 = undefined;
var stdout_buffer: [4096]u8 = undefined;

const crippled = switch (builtin.zig_backend) {
    .stage2_aarch64,
    .stage2_powerpc,
    .stage2_riscv64,
    => true,
    else => false,
};

// kcoro: the watchdog (see the top of the file).

/// Status the process ends with when the watchdog fires.
const watchdog_status = 3;
const default_bound_s = 300;
/// The exit after the last test: at most this, or the per-test bound if that is smaller.
const exit_bound_s = 30;
/// How often the watchdog looks; a hang is named within bound + this.
const poll_ns = 250 * std.time.ns_per_ms;

/// Bumped at each test's start and end, and at the start of the exit after the last test: odd
/// while one of those is in progress, even between tests (the runner waits for the build
/// runner's next message then, which is not bounded here).
var phase: std.atomic.Value(u64) = .init(0);
/// The test in progress while `phase` is odd, or `exit_index`. Written only while `phase` is
/// even (before `beginPhase` makes it odd).
var phase_index: std.atomic.Value(u32) = .init(0);
const exit_index = std.math.maxInt(u32);
/// Seconds a test may run; from KCORO_TEST_TIMEOUT_S, read before the watchdog starts.
var bound_s: u64 = default_bound_s;
var verbose = false;
/// KCORO_TEST_SKIP's parts ("|" between them); read before the first test.
var skip_list: []const u8 = "";

fn beginPhase(index: u32) void {
    assert(phase.raw & 1 == 0); // only this (the main) thread writes `phase`
    // Release: pairs with the watchdog's acquire load of `phase_index`; a watchdog that reads
    // this index then sees `phase` at least at the (even) value this store follows, so its
    // re-check of `phase` rejects the index for any other phase.
    phase_index.store(index, .release);
    // Release: pairs with the watchdog's acquire load of `phase` (it then reads this index).
    _ = phase.fetchAdd(1, .release);
}

fn endPhase() void {
    assert(phase.raw & 1 == 1);
    // Release: pairs with the watchdog's acquire load of `phase_index` (through the next
    // `beginPhase`'s release store, which follows this): an index of a later test read there
    // comes with this increment visible, which is what the watchdog's re-check relies on.
    _ = phase.fetchAdd(1, .release);
}

/// Reads KCORO_TEST_TIMEOUT_S and KCORO_TEST_VERBOSE and starts the watchdog thread. A bad
/// KCORO_TEST_TIMEOUT_S ends the process (status 2) rather than running unbounded.
fn startWatchdog() void {
    if (builtin.os.tag == .windows or builtin.os.tag == .wasi) return; // no getenv there
    if (std.posix.getenv("KCORO_TEST_VERBOSE")) |v| {
        verbose = v.len != 0 and !std.mem.eql(u8, v, "0");
    }
    if (std.posix.getenv("KCORO_TEST_SKIP")) |v| skip_list = v;
    if (std.posix.getenv("KCORO_TEST_TIMEOUT_S")) |v| {
        // Digits only: parseUnsigned also takes "1_000" (Zig's digit separators).
        const digits = v.len != 0 and for (v) |c| {
            if (!std.ascii.isDigit(c)) break false;
        } else true;
        const n = if (digits) std.fmt.parseUnsigned(u32, v, 10) catch 0 else 0;
        if (n == 0) {
            std.debug.print("kcoro test runner: Cannot read KCORO_TEST_TIMEOUT_S: not a whole number of seconds above 0, received \"{s}\"\n", .{v});
            std.process.exit(2);
        }
        bound_s = n;
    }
    // A small stack: the watchdog formats one number. Its own name, not a kcoro worker's
    // (tests count threads by name, `threadsNamed` in zig-src/root.zig).
    const t = std.Thread.spawn(.{ .stack_size = 64 * 1024 }, watchdog, .{}) catch |err| {
        std.debug.print("kcoro test runner: Cannot start the watchdog thread: {s}\n", .{@errorName(err)});
        std.process.exit(2);
    };
    t.setName("test-watchdog") catch {};
    t.detach(); // it ends with the process
}

fn watchdog() void {
    // Signals are not blocked here: no test sends a process-directed one, and a thread with
    // all of them blocked made ThreadSanitizer (-Dtsan=true) report races in the channel
    // stress tests in 3 of 6 runs, none in 8 without the mask.
    var seen: u64 = 0; // the phase last looked at, and since when (its first sighting)
    var since: ?std.time.Instant = null;
    while (true) {
        std.Thread.sleep(poll_ns);
        // Acquire: pairs with the release increments in `beginPhase`/`endPhase`.
        const p = phase.load(.acquire);
        const now = std.time.Instant.now() catch continue;
        if (p != seen or since == null) {
            seen = p;
            since = now;
            continue;
        }
        if (p & 1 == 0) continue; // between tests
        // Acquire: pairs with the release store in `beginPhase`. Then `phase` unchanged means
        // this is the index of phase `p` (a later test's index is stored after `phase` moved on).
        const index = phase_index.load(.acquire);
        if (phase.load(.monotonic) != p) continue;
        const bound = if (index == exit_index) @min(bound_s, exit_bound_s) else bound_s;
        if (now.since(since.?) < bound * std.time.ns_per_s) continue;
        fire(index, bound);
    }
}

/// Names what ran past its bound and ends the process. Writes stderr directly, without the
/// lock `std.debug.print` takes (the hung test may hold it), and ends with `_exit`: libc's
/// `exit` runs atexit handlers, which may be what hangs.
fn fire(index: u32, bound: u64) noreturn {
    const name = if (index == exit_index) "the exit after the last test" else builtin.test_functions[index].name;
    var num: [24]u8 = undefined;
    const stderr = std.fs.File.stderr();
    stderr.writeAll("\nkcoro test watchdog: ") catch {};
    stderr.writeAll(name) catch {};
    stderr.writeAll(" ran past ") catch {};
    stderr.writeAll(std.fmt.bufPrint(&num, "{d}s\n", .{bound}) catch "?s\n") catch {};
    if (builtin.link_libc) std.c._exit(watchdog_status);
    std.posix.exit(watchdog_status);
}

/// KCORO_TEST_SKIP: whether a part of it names this test. An empty part names none.
fn skipListed(name: []const u8) bool {
    var parts = std.mem.splitScalar(u8, skip_list, '|');
    while (parts.next()) |part| {
        if (part.len != 0 and std.mem.indexOf(u8, name, part) != null) return true;
    }
    return false;
}

/// A test, or error.SkipZigTest where KCORO_TEST_SKIP names it (not run).
fn runTest(test_fn: std.builtin.TestFn) anyerror!void {
    if (skipListed(test_fn.name)) return error.SkipZigTest;
    return test_fn.func();
}

/// KCORO_TEST_VERBOSE: the test's name as it starts.
fn announce(index: usize) void {
    if (!verbose) return;
    std.debug.print("kcoro test {d}/{d}: {s}\n", .{ index + 1, builtin.test_functions.len, builtin.test_functions[index].name });
}

/// ThreadSanitizer reports so far: its runtime calls `__tsan_on_report` (a weak hook it defines
/// empty) once for each report it prints.
var tsan_reports: u32 = 0;

fn onTsanReport(_: ?*const anyopaque) callconv(.c) void {
    @disableInstrumentation(); // called inside the runtime, with its report locks held
    // Monotonic: a count only. A report of another thread's may land after the test ended;
    // the next test is charged with it then.
    _ = @atomicRmw(u32, &tsan_reports, .Add, 1, .monotonic);
}

/// `tsan_reports` when this process was forked (`pthread_atfork`); null in the test binary
/// itself. Written in the child before anything else runs there.
var tsan_reports_at_fork: ?u32 = null;

fn onTsanFork() callconv(.c) void {
    @disableInstrumentation();
    tsan_reports_at_fork = tsanReports();
}

/// The sanitizer's last word at exit: whether the process failed (exits with its status 66).
/// A forked child inherits its parent's count of reports, so a child of any test after a
/// report exited 66 and failed that test too (each later waitChild and childOutput test). In a
/// child, only reports made there fail it. Found by `dlsym` (build.zig exports the test
/// binary's symbols under -Dtsan).
fn onTsanFinalize(failed: c_int) callconv(.c) c_int {
    @disableInstrumentation();
    const at_fork = tsan_reports_at_fork orelse return failed;
    return if (tsanReports() != at_fork) failed else 0;
}

extern "c" fn pthread_atfork(
    prepare: ?*const fn () callconv(.c) void,
    parent: ?*const fn () callconv(.c) void,
    child: ?*const fn () callconv(.c) void,
) c_int;

comptime {
    if (builtin.sanitize_thread) {
        @export(&onTsanReport, .{ .name = "__tsan_on_report" });
        @export(&onTsanFinalize, .{ .name = "__tsan_on_finalize" });
    }
}

fn tsanReports() u32 {
    return @atomicLoad(u32, &tsan_reports, .monotonic);
}

/// Whether ThreadSanitizer reported since `before` (`tsanReports`): says so on stderr.
fn tsanReported(before: u32) bool {
    const n = tsanReports() -% before;
    if (n == 0) return false;
    std.debug.print("kcoro test runner: ThreadSanitizer reported {d} warning(s) during this test (above)\n", .{n});
    return true;
}

/// The exit after the last test, bounded by the watchdog.
fn exitBounded(status: u8) noreturn {
    beginPhase(exit_index);
    std.process.exit(status);
}

pub fn main() void {
    @disableInstrumentation();

    if (builtin.cpu.arch.isSpirV()) {
        // SPIR-V needs an special test-runner
        return;
    }

    if (crippled) {
        return mainSimple() catch @panic("test failure\n");
    }

    // kcoro: a forked child's exit status under the sanitizer (`onTsanFinalize`).
    if (builtin.sanitize_thread and pthread_atfork(null, null, onTsanFork) != 0)
        @panic("pthread_atfork failed");

    const args = std.process.argsAlloc(fba.allocator()) catch
        @panic("unable to parse command line args");

    var listen = false;
    var opt_cache_dir: ?[]const u8 = null;

    for (args[1..]) |arg| {
        if (std.mem.eql(u8, arg, "--listen=-")) {
            listen = true;
        } else if (std.mem.startsWith(u8, arg, "--seed=")) {
            testing.random_seed = std.fmt.parseUnsigned(u32, arg["--seed=".len..], 0) catch
                @panic("unable to parse --seed command line argument");
        } else if (std.mem.startsWith(u8, arg, "--cache-dir")) {
            opt_cache_dir = arg["--cache-dir=".len..];
        } else {
            @panic("unrecognized command line argument");
        }
    }

    fba.reset();
    if (!builtin.fuzz) startWatchdog(); // kcoro: a fuzzing run has no per-test bound
    if (builtin.fuzz) {
        const cache_dir = opt_cache_dir orelse @panic("missing --cache-dir=[path] argument");
        fuzzer_init(FuzzerSlice.fromSlice(cache_dir));
    }

    if (listen) {
        return mainServer() catch @panic("internal test runner failure");
    } else {
        return mainTerminal();
    }
}

fn mainServer() !void {
    @disableInstrumentation();
    var stdin_reader = std.fs.File.stdin().readerStreaming(&stdin_buffer);
    var stdout_writer = std.fs.File.stdout().writerStreaming(&stdout_buffer);
    var server = try std.zig.Server.init(.{
        .in = &stdin_reader.interface,
        .out = &stdout_writer.interface,
        .zig_version = builtin.zig_version_string,
    });

    if (builtin.fuzz) {
        const coverage_id = fuzzer_coverage_id();
        try server.serveU64Message(.coverage_id, coverage_id);
    }

    while (true) {
        const hdr = try server.receiveMessage();
        switch (hdr.tag) {
            .exit => {
                return exitBounded(0); // kcoro: bounded
            },
            .query_test_metadata => {
                testing.allocator_instance = .{};
                defer if (testing.allocator_instance.deinit() == .leak) {
                    @panic("internal test runner memory leak");
                };

                var string_bytes: std.ArrayListUnmanaged(u8) = .empty;
                defer string_bytes.deinit(testing.allocator);
                try string_bytes.append(testing.allocator, 0); // Reserve 0 for null.

                const test_fns = builtin.test_functions;
                const names = try testing.allocator.alloc(u32, test_fns.len);
                defer testing.allocator.free(names);
                const expected_panic_msgs = try testing.allocator.alloc(u32, test_fns.len);
                defer testing.allocator.free(expected_panic_msgs);

                for (test_fns, names, expected_panic_msgs) |test_fn, *name, *expected_panic_msg| {
                    name.* = @intCast(string_bytes.items.len);
                    try string_bytes.ensureUnusedCapacity(testing.allocator, test_fn.name.len + 1);
                    string_bytes.appendSliceAssumeCapacity(test_fn.name);
                    string_bytes.appendAssumeCapacity(0);
                    expected_panic_msg.* = 0;
                }

                try server.serveTestMetadata(.{
                    .names = names,
                    .expected_panic_msgs = expected_panic_msgs,
                    .string_bytes = string_bytes.items,
                });
            },

            .run_test => {
                testing.allocator_instance = .{};
                log_err_count = 0;
                const index = try server.receiveBody_u32();
                const test_fn = builtin.test_functions[index];
                var fail = false;
                var skip = false;
                is_fuzz_test = false;
                announce(index); // kcoro
                const reports = tsanReports(); // kcoro
                beginPhase(index); // kcoro: the watchdog bounds the test from here
                runTest(test_fn) catch |err| switch (err) { // kcoro: KCORO_TEST_SKIP
                    error.SkipZigTest => skip = true,
                    else => {
                        fail = true;
                        if (@errorReturnTrace()) |trace| {
                            std.debug.dumpStackTrace(trace.*);
                        }
                    },
                };
                endPhase(); // kcoro
                if (tsanReported(reports)) { // kcoro: failed, not skipped (the build runner counts both)
                    fail = true;
                    skip = false;
                }
                const leak = testing.allocator_instance.deinit() == .leak;
                try server.serveTestResults(.{
                    .index = index,
                    .flags = .{
                        .fail = fail,
                        .skip = skip,
                        .leak = leak,
                        .fuzz = is_fuzz_test,
                        .log_err_count = std.math.lossyCast(
                            @FieldType(std.zig.Server.Message.TestResults.Flags, "log_err_count"),
                            log_err_count,
                        ),
                    },
                });
            },
            .start_fuzzing => {
                if (!builtin.fuzz) unreachable;
                const index = try server.receiveBody_u32();
                const test_fn = builtin.test_functions[index];
                const entry_addr = @intFromPtr(test_fn.func);
                try server.serveU64Message(.fuzz_start_addr, entry_addr);
                defer if (testing.allocator_instance.deinit() == .leak) std.process.exit(1);
                is_fuzz_test = false;
                fuzzer_set_name(test_fn.name.ptr, test_fn.name.len);
                test_fn.func() catch |err| switch (err) {
                    error.SkipZigTest => return,
                    else => {
                        if (@errorReturnTrace()) |trace| {
                            std.debug.dumpStackTrace(trace.*);
                        }
                        std.debug.print("failed with error.{s}\n", .{@errorName(err)});
                        std.process.exit(1);
                    },
                };
                if (!is_fuzz_test) @panic("missed call to std.testing.fuzz");
                if (log_err_count != 0) @panic("error logs detected");
            },

            else => {
                std.debug.print("unsupported message: {x}\n", .{@intFromEnum(hdr.tag)});
                std.process.exit(1);
            },
        }
    }
}

fn mainTerminal() void {
    @disableInstrumentation();
    const test_fn_list = builtin.test_functions;
    var ok_count: usize = 0;
    var skip_count: usize = 0;
    var fail_count: usize = 0;
    var fuzz_count: usize = 0;
    const root_node = if (builtin.fuzz) std.Progress.Node.none else std.Progress.start(.{
        .root_name = "Test",
        .estimated_total_items = test_fn_list.len,
    });
    const have_tty = std.fs.File.stderr().isTty();

    var async_frame_buffer: []align(builtin.target.stackAlignment()) u8 = undefined;
    // TODO this is on the next line (using `undefined` above) because otherwise zig incorrectly
    // ignores the alignment of the slice.
    async_frame_buffer = &[_]u8{};

    var leaks: usize = 0;
    for (test_fn_list, 0..) |test_fn, i| {
        testing.allocator_instance = .{};
        defer {
            if (testing.allocator_instance.deinit() == .leak) {
                leaks += 1;
            }
        }
        testing.log_level = .warn;

        announce(i); // kcoro: on a line of its own, before the standard "i/N name..."
        const test_node = root_node.start(test_fn.name, 0);
        if (!have_tty) {
            std.debug.print("{d}/{d} {s}...", .{ i + 1, test_fn_list.len, test_fn.name });
        }
        is_fuzz_test = false;
        const reports = tsanReports(); // kcoro
        beginPhase(@intCast(i)); // kcoro: the watchdog bounds the test from here
        var result = runTest(test_fn); // kcoro: KCORO_TEST_SKIP
        endPhase();
        if (tsanReported(reports)) result = error.ThreadSanitizerReport; // kcoro
        if (result) |_| {
            ok_count += 1;
            test_node.end();
            if (!have_tty) std.debug.print("OK\n", .{});
        } else |err| switch (err) {
            error.SkipZigTest => {
                skip_count += 1;
                if (have_tty) {
                    std.debug.print("{d}/{d} {s}...SKIP\n", .{ i + 1, test_fn_list.len, test_fn.name });
                } else {
                    std.debug.print("SKIP\n", .{});
                }
                test_node.end();
            },
            else => {
                fail_count += 1;
                if (have_tty) {
                    std.debug.print("{d}/{d} {s}...FAIL ({s})\n", .{
                        i + 1, test_fn_list.len, test_fn.name, @errorName(err),
                    });
                } else {
                    std.debug.print("FAIL ({s})\n", .{@errorName(err)});
                }
                if (@errorReturnTrace()) |trace| {
                    std.debug.dumpStackTrace(trace.*);
                }
                test_node.end();
            },
        }
        fuzz_count += @intFromBool(is_fuzz_test);
    }
    root_node.end();
    if (ok_count == test_fn_list.len) {
        std.debug.print("All {d} tests passed.\n", .{ok_count});
    } else {
        std.debug.print("{d} passed; {d} skipped; {d} failed.\n", .{ ok_count, skip_count, fail_count });
    }
    if (log_err_count != 0) {
        std.debug.print("{d} errors were logged.\n", .{log_err_count});
    }
    if (leaks != 0) {
        std.debug.print("{d} tests leaked memory.\n", .{leaks});
    }
    if (fuzz_count != 0) {
        std.debug.print("{d} fuzz tests found.\n", .{fuzz_count});
    }
    // kcoro: the exit is bounded by the watchdog, after the summary above.
    exitBounded(if (leaks != 0 or log_err_count != 0 or fail_count != 0) 1 else 0);
}

pub fn log(
    comptime message_level: std.log.Level,
    comptime scope: @Type(.enum_literal),
    comptime format: []const u8,
    args: anytype,
) void {
    @disableInstrumentation();
    if (@intFromEnum(message_level) <= @intFromEnum(std.log.Level.err)) {
        log_err_count +|= 1;
    }
    if (@intFromEnum(message_level) <= @intFromEnum(testing.log_level)) {
        std.debug.print(
            "[" ++ @tagName(scope) ++ "] (" ++ @tagName(message_level) ++ "): " ++ format ++ "\n",
            args,
        );
    }
}

/// Simpler main(), exercising fewer language features, so that
/// work-in-progress backends can handle it.
pub fn mainSimple() anyerror!void {
    @disableInstrumentation();
    // is the backend capable of calling `std.fs.File.writeAll`?
    const enable_write = switch (builtin.zig_backend) {
        .stage2_aarch64, .stage2_riscv64 => true,
        else => false,
    };
    // is the backend capable of calling `std.Io.Writer.print`?
    const enable_print = switch (builtin.zig_backend) {
        .stage2_aarch64, .stage2_riscv64 => true,
        else => false,
    };

    var passed: u64 = 0;
    var skipped: u64 = 0;
    var failed: u64 = 0;

    // we don't want to bring in File and Writer if the backend doesn't support it
    const stdout = if (enable_write) std.fs.File.stdout() else {};

    for (builtin.test_functions) |test_fn| {
        if (enable_write) {
            stdout.writeAll(test_fn.name) catch {};
            stdout.writeAll("... ") catch {};
        }
        if (test_fn.func()) |_| {
            if (enable_write) stdout.writeAll("PASS\n") catch {};
        } else |err| {
            if (err != error.SkipZigTest) {
                if (enable_write) stdout.writeAll("FAIL\n") catch {};
                failed += 1;
                if (!enable_write) return err;
                continue;
            }
            if (enable_write) stdout.writeAll("SKIP\n") catch {};
            skipped += 1;
            continue;
        }
        passed += 1;
    }
    if (enable_print) {
        var stdout_writer = stdout.writer(&.{});
        stdout_writer.interface.print("{} passed, {} skipped, {} failed\n", .{ passed, skipped, failed }) catch {};
    }
    if (failed != 0) std.process.exit(1);
}

const FuzzerSlice = extern struct {
    ptr: [*]const u8,
    len: usize,

    /// Inline to avoid fuzzer instrumentation.
    inline fn toSlice(s: FuzzerSlice) []const u8 {
        return s.ptr[0..s.len];
    }

    /// Inline to avoid fuzzer instrumentation.
    inline fn fromSlice(s: []const u8) FuzzerSlice {
        return .{ .ptr = s.ptr, .len = s.len };
    }
};

var is_fuzz_test: bool = undefined;

extern fn fuzzer_set_name(name_ptr: [*]const u8, name_len: usize) void;
extern fn fuzzer_init(cache_dir: FuzzerSlice) void;
extern fn fuzzer_init_corpus_elem(input_ptr: [*]const u8, input_len: usize) void;
extern fn fuzzer_start(testOne: *const fn ([*]const u8, usize) callconv(.c) void) void;
extern fn fuzzer_coverage_id() u64;

pub fn fuzz(
    context: anytype,
    comptime testOne: fn (context: @TypeOf(context), []const u8) anyerror!void,
    options: testing.FuzzInputOptions,
) anyerror!void {
    // Prevent this function from confusing the fuzzer by omitting its own code
    // coverage from being considered.
    @disableInstrumentation();

    // Some compiler backends are not capable of handling fuzz testing yet but
    // we still want CI test coverage enabled.
    if (crippled) return;

    // Smoke test to ensure the test did not use conditional compilation to
    // contradict itself by making it not actually be a fuzz test when the test
    // is built in fuzz mode.
    is_fuzz_test = true;

    // Ensure no test failure occurred before starting fuzzing.
    if (log_err_count != 0) @panic("error logs detected");

    // libfuzzer is in a separate compilation unit so that its own code can be
    // excluded from code coverage instrumentation. It needs a function pointer
    // it can call for checking exactly one input. Inside this function we do
    // our standard unit test checks such as memory leaks, and interaction with
    // error logs.
    const global = struct {
        var ctx: @TypeOf(context) = undefined;

        fn fuzzer_one(input_ptr: [*]const u8, input_len: usize) callconv(.c) void {
            @disableInstrumentation();
            testing.allocator_instance = .{};
            defer if (testing.allocator_instance.deinit() == .leak) std.process.exit(1);
            log_err_count = 0;
            testOne(ctx, input_ptr[0..input_len]) catch |err| switch (err) {
                error.SkipZigTest => return,
                else => {
                    std.debug.lockStdErr();
                    if (@errorReturnTrace()) |trace| std.debug.dumpStackTrace(trace.*);
                    std.debug.print("failed with error.{s}\n", .{@errorName(err)});
                    std.process.exit(1);
                },
            };
            if (log_err_count != 0) {
                std.debug.lockStdErr();
                std.debug.print("error logs detected\n", .{});
                std.process.exit(1);
            }
        }
    };
    if (builtin.fuzz) {
        const prev_allocator_state = testing.allocator_instance;
        testing.allocator_instance = .{};
        defer testing.allocator_instance = prev_allocator_state;

        for (options.corpus) |elem| fuzzer_init_corpus_elem(elem.ptr, elem.len);

        global.ctx = context;
        fuzzer_start(&global.fuzzer_one);
        return;
    }

    // When the unit test executable is not built in fuzz mode, only run the
    // provided corpus.
    for (options.corpus) |input| {
        try testOne(context, input);
    }

    // In case there is no provided corpus, also use an empty
    // string as a smoke test.
    try testOne(context, "");
}

//! Builds libkcoro (ReleaseFast unless -Doptimize says otherwise), runs the Zig unit tests with
//! safety checks on (Debug unless -Dtest-optimize says otherwise), and builds/runs the native
//! bench executable (always ReleaseFast).
//!
//!   zig build                      -> zig-out/lib/libkcoro.so and libkcoro.a, zig-out/include/kcoro.h,
//!                                     zig-out/lib/kcoro_napi.node (Node-API companion, ffi/napi.ts)
//!   as a dependency                -> dep.module("kcoro") (Zig API), dep.artifact("kcoro") (C ABI,
//!                                     shared), dep.artifact("kcoro-static") (C ABI, static)
//!   zig build test                 -> unit tests (add -Dtarget=aarch64-linux-musl -fqemu for ARM64)
//!   zig build test -Dtest-hang=true -> a test that hangs on purpose, for the runner's watchdog
//!                                     (KCORO_TEST_TIMEOUT_S=2), and with KCORO_TEST_HANG=race
//!                                     and -Dtsan=true one that races, for its sanitizer check;
//!                                     see zig-src/testing/runner.zig
//!   zig build test -Dtsan=true     -> the unit tests under ThreadSanitizer (x86_64 Linux only; the
//!                                     first build compiles its runtime, minutes); not in ./task test
//!   zig build bench -- [args]      -> native benchmarks
//!   zig build bench-exe            -> only builds them (zig-out/bin/kcoro-bench)
//!   zig build test-exe             -> the unit tests as a program (zig-out/bin/kcoro-test; with
//!                                     -Dtest-hang=true kcoro-hang-test, and -Dtsan=true adds
//!                                     "-tsan": neither replaces the unit tests' program)
const std = @import("std");

pub fn build(b: *std.Build) void {
    const target = b.standardTargetOptions(.{});
    // Null when not given: the library is ReleaseFast then, but the Zig module takes the mode of
    // whoever imports it (below).
    const optimize_opt = b.option(std.builtin.OptimizeMode, "optimize", "Library build mode (default ReleaseFast)");
    const optimize = optimize_opt orelse .ReleaseFast;
    const test_optimize = b.option(std.builtin.OptimizeMode, "test-optimize", "Unit test build mode (default Debug)") orelse .Debug;
    const test_filter = b.option([]const u8, "test-filter", "Run only tests whose name contains this");
    // zig-src/testing/hang_test.zig instead of the unit tests: checks that the test runner's
    // watchdog names a hung test, and that it fails a test ThreadSanitizer reported in
    // (tests/zig_runner_test.ts).
    const test_hang = b.option(bool, "test-hang", "Run tests that hang or race on purpose instead of the unit tests (for the test runner's checks)") orelse false;
    // Each coroutine is a TSan fiber there (zig-src/coro/tsan.zig); tests that fork a child
    // that starts threads are skipped (`forkedThreadsOk` in zig-src/sched/scheduler.zig).
    const tsan = b.option(bool, "tsan", "Unit tests under ThreadSanitizer (x86_64 Linux only)") orelse false;
    if (tsan and (target.result.cpu.arch != .x86_64 or target.result.os.tag != .linux)) {
        std.debug.print("-Dtsan=true: ThreadSanitizer runs are for x86_64 Linux only\n", .{});
        std.process.exit(1);
    }

    // The shared library: the C ABI in zig-src/root.zig.
    const lib_mod = b.createModule(.{
        .root_source_file = b.path("zig-src/root.zig"),
        .target = target,
        .optimize = optimize,
        .link_libc = true,
    });
    lib_mod.addIncludePath(b.path("include"));
    // LLVM for every build: Zig 0.15's self-hosted x86_64 backend (its default for Debug) does not
    // support naked functions with parameters, which is what the context switch is.
    const lib = b.addLibrary(.{ .linkage = .dynamic, .name = "kcoro", .root_module = lib_mod, .use_llvm = true });
    // zig-out/include/kcoro.h, and the include path of whoever links the artifact as a
    // dependency (`dep.artifact("kcoro")`).
    lib.installHeader(b.path("include/kcoro.h"), "kcoro.h");
    b.installArtifact(lib);

    // The static library, zig-out/lib/libkcoro.a, for a C program linked without the shared
    // one. Its own module (the same source and options) with position-independent code, so it
    // links into the PIE executables compilers make by default. Named "kcoro-static": a second
    // artifact named "kcoro" would make `dep.artifact("kcoro")` ambiguous (a panic in the
    // dependent's build); installed under the usual file name.
    const static_mod = b.createModule(.{
        .root_source_file = b.path("zig-src/root.zig"),
        .target = target,
        .optimize = optimize,
        .link_libc = true,
        .pic = true,
    });
    static_mod.addIncludePath(b.path("include"));
    const static_lib = b.addLibrary(.{ .linkage = .static, .name = "kcoro-static", .root_module = static_mod, .use_llvm = true });
    static_lib.installHeader(b.path("include/kcoro.h"), "kcoro.h"); // for a dependent's include path
    b.getInstallStep().dependOn(&b.addInstallArtifact(static_lib, .{ .dest_sub_path = "libkcoro.a" }).step);

    // The Node-API companion, zig-out/lib/kcoro_napi.node (zig-src/napi/addon.zig): chunk
    // buffers whose V8 backing-store deleter gives pool chunks back (ffi/napi.ts loads it next
    // to the library). Built in the library's mode. Its napi_* symbols resolve against the deno
    // executable at load time, and it finds libkcoro with dlopen (libc), so it links neither.
    // Not for Windows (Node-API there needs an import library of the host).
    if (target.result.os.tag != .windows) {
        const napi_mod = b.createModule(.{
            .root_source_file = b.path("zig-src/napi/addon.zig"),
            .target = target,
            .optimize = optimize,
            .link_libc = true,
        });
        const napi = b.addLibrary(.{ .linkage = .dynamic, .name = "kcoro_napi", .root_module = napi_mod, .use_llvm = true });
        napi.linker_allow_shlib_undefined = true;
        b.getInstallStep().dependOn(&b.addInstallArtifact(napi, .{ .dest_sub_path = "kcoro_napi.node" }).step);
    }

    // The Zig API for Zig programs that take kcoro as a dependency: `dep.module("kcoro")`. Their
    // executables need the LLVM backend (`.use_llvm = true`), as the library and tests here do.
    // Built in the importing module's mode (its safety checks, assertions and ownership
    // tracking with it) unless the dependency is given `.optimize`: the library's ReleaseFast
    // default made a Debug program's kcoro code ReleaseFast, with none of them.
    _ = b.addModule("kcoro", .{
        .root_source_file = b.path("zig-src/kcoro.zig"),
        .target = target,
        .optimize = optimize_opt,
        .link_libc = true,
    });

    // Unit tests, with assertions on.
    const test_mod = b.createModule(.{
        .root_source_file = b.path(if (test_hang) "zig-src/testing/hang_test.zig" else "zig-src/root.zig"),
        .target = target,
        .optimize = test_optimize,
        .link_libc = true,
        .sanitize_thread = if (tsan) true else null,
    });
    test_mod.addIncludePath(b.path("include"));
    // Zig's own runner with a watchdog (zig-src/testing/runner.zig): a test that runs past
    // KCORO_TEST_TIMEOUT_S (default 300 s) is named on stderr and the binary exits, where a
    // hung one ran into scripts/test.sh's 30-minute bound unnamed. KCORO_TEST_VERBOSE=1 names
    // each test as it starts.
    const tests = b.addTest(.{
        .root_module = test_mod,
        .use_llvm = true,
        .filters = if (test_filter) |f| &.{f} else &.{},
        .test_runner = .{ .path = b.path("zig-src/testing/runner.zig"), .mode = .server },
    });
    // The sanitizer finds the runner's `__tsan_on_finalize` (zig-src/testing/runner.zig) with
    // dlsym, which sees only the executable's exported symbols.
    if (tsan) tests.rdynamic = true;
    const run_tests = b.addRunArtifact(tests);
    // A foreign target's tests run under an emulator (-fqemu, or binfmt_misc): qemu-user aborts
    // a forked child that starts threads while its parent has another (see `forkedThreadsOk`
    // in zig-src/sched/scheduler.zig), and the abort's output in the build runner's protocol
    // pipe hung the run for good. scripts/test.sh sets this too; a hand-run `zig build test
    // -Dtarget=aarch64-linux-musl -fqemu`, as the header above suggests, did not, and hung.
    if (target.result.cpu.arch != b.graph.host.result.cpu.arch) {
        run_tests.setEnvironmentVariable("KCORO_TEST_QEMU", "1");
    }
    const test_step = b.step("test", "Run the Zig unit tests");
    test_step.dependOn(&run_tests.step);
    // The same tests as a program of their own, for a machine without Zig (a larger one, to run
    // them on more cores than this one has). The hang tests and the sanitizer build get names of
    // their own: under the one name, `zig build test-exe -Dtest-hang=true` (or -Dtsan=true)
    // without `--prefix` replaced zig-out/bin/kcoro-test, the unit tests, with them.
    const exe_name = b.fmt("{s}{s}", .{
        if (test_hang) "kcoro-hang-test" else "kcoro-test",
        if (tsan) "-tsan" else "",
    });
    const install_tests = b.addInstallArtifact(tests, .{ .dest_sub_path = exe_name });
    b.step("test-exe", "Build the unit tests as zig-out/bin/kcoro-test (-Dtest-hang=true: kcoro-hang-test; -Dtsan=true adds -tsan)").dependOn(&install_tests.step);

    // The native bench executable.
    // The C ABI's root, so that the benchmarks of what only it has (native actors) run too;
    // the core is its `core` (one module: a file may belong to one only).
    const kcoro_mod = b.createModule(.{
        .root_source_file = b.path("zig-src/root.zig"),
        .target = target,
        .optimize = .ReleaseFast,
        .link_libc = true,
    });
    kcoro_mod.addIncludePath(b.path("include"));
    const bench_mod = b.createModule(.{
        .root_source_file = b.path("bench/native/bench.zig"),
        .target = target,
        .optimize = .ReleaseFast,
        .link_libc = true,
        .imports = &.{.{ .name = "kcoro", .module = kcoro_mod }},
    });
    const bench_exe = b.addExecutable(.{ .name = "kcoro-bench", .root_module = bench_mod, .use_llvm = true });
    const install_bench = b.addInstallArtifact(bench_exe, .{});
    const run_bench = b.addRunArtifact(bench_exe);
    if (b.args) |args| run_bench.addArgs(args);
    b.step("bench-exe", "Build the native bench executable only (zig-out/bin/kcoro-bench)").dependOn(&install_bench.step);
    const bench_step = b.step("bench", "Run the native benchmarks");
    bench_step.dependOn(&install_bench.step);
    bench_step.dependOn(&run_bench.step);
}

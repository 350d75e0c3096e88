//! Picks the context switch for the target architecture and gives it a callable type.
//!
//! Each switch is reached through a function pointer of C calling convention:
//! `switch_fn(from, to)` saves the caller's callee-saved state into `from` and resumes `to` (a
//! different context: x86_64 reads `to` before it writes `from`); it returns when something
//! switches back to `from`.
//!
//! Two rules keep the optimiser honest about the naked asm functions (both were real crashes):
//! - declare them with their true C signature, never `noreturn`: through a pointer the
//!   compiler can see through, a `noreturn` callee makes everything after the call unreachable;
//! - mark them `noinline`: inlined into a caller, their asm no longer finds its arguments in
//!   the argument registers.
const std = @import("std");
const test_wait = @import("../test_wait.zig");
const builtin = @import("builtin");

pub const impl = switch (builtin.cpu.arch) {
    .x86_64 => @import("../arch/x86_64.zig"),
    .aarch64 => @import("../arch/aarch64.zig"),
    else => @compileError("kcoro has a context switch for x86_64 and aarch64 only"),
};

pub const Context = impl.Context;
pub const SwitchFn = *const fn (from: *Context, to: *Context) callconv(.c) void;

/// Saves and restores the ABI's callee-saved registers only.
pub const switch_plain: SwitchFn = @ptrCast(&impl.switchPlain);
/// Also saves and restores the FP control state (MXCSR + x87 CW, or FPCR).
pub const switch_fp: SwitchFn = @ptrCast(&impl.switchFp);

/// Prepares `ctx` to run `entry(arg)` on the stack ending at `top` (16-byte aligned).
pub const init = impl.init;
pub const initRaw = impl.initRaw;
pub const trap = impl.trap;
pub const readFpControl = impl.readFpControl;
pub const writeFpControl = impl.writeFpControl;

test "a raw switch runs the entry and comes back" {
    const S = struct {
        var main_ctx: Context = .{};
        var co_ctx: Context = .{};
        var hits: u32 = 0;
        fn entry(arg: usize) callconv(.c) noreturn {
            while (true) {
                hits += @intCast(arg);
                switch_plain(&co_ctx, &main_ctx);
            }
        }
    };
    const stack = try std.testing.allocator.alignedAlloc(u8, .@"16", 16 * 1024);
    defer std.testing.allocator.free(stack);
    init(&S.co_ctx, @intFromPtr(stack.ptr) + stack.len, @intFromPtr(&S.entry), 3);
    switch_plain(&S.main_ctx, &S.co_ctx);
    try std.testing.expectEqual(@as(u32, 3), S.hits);
    switch_plain(&S.main_ctx, &S.co_ctx);
    try std.testing.expectEqual(@as(u32, 6), S.hits);
}

// ---------------------------------------------------------------------------------------------
// Register-preservation tests. `probe(from, to, switch_fn, out, seed)` (test-only asm, below)
// loads seed-derived values into every callee-saved register, switches, and on the way back
// stores what those registers then hold into `out`. Both sides of a switch probe with different
// seeds, so a register the switch fails to save or restore shows up as a wrong value.

const Probe = *const fn (from: *Context, to: *Context, sw: SwitchFn, out: *[probe_regs]u64, seed: u64) callconv(.c) void;

const probe_regs = switch (builtin.cpu.arch) {
    .x86_64 => 6, // rbx rbp r12 r13 r14 r15
    .aarch64 => 19, // x19..x29, d8..d15
    else => unreachable,
};

/// What `probe` stores in out[i] when registers survive: seed + i (for AArch64's d8..d15, which
/// are loaded from x19..x26, seed + (i - 11)).
fn expected(seed: u64, i: usize) u64 {
    if (builtin.cpu.arch == .aarch64 and i >= 11) return seed + (i - 11);
    return seed + i;
}

const probe_impl = switch (builtin.cpu.arch) {
    .x86_64 => struct {
        // rdi=from rsi=to rdx=switch rcx=out r8=seed
        noinline fn probe(_: *Context, _: *Context, _: SwitchFn, _: *[probe_regs]u64, _: u64) callconv(.naked) void {
            asm volatile (
                \\ pushq %%rbx
                \\ pushq %%rbp
                \\ pushq %%r12
                \\ pushq %%r13
                \\ pushq %%r14
                \\ pushq %%r15
                \\ pushq %%rcx
                \\ leaq 0(%%r8), %%rbx
                \\ leaq 1(%%r8), %%rbp
                \\ leaq 2(%%r8), %%r12
                \\ leaq 3(%%r8), %%r13
                \\ leaq 4(%%r8), %%r14
                \\ leaq 5(%%r8), %%r15
                \\ callq *%%rdx
                \\ popq %%rcx
                \\ movq %%rbx, 0(%%rcx)
                \\ movq %%rbp, 8(%%rcx)
                \\ movq %%r12, 16(%%rcx)
                \\ movq %%r13, 24(%%rcx)
                \\ movq %%r14, 32(%%rcx)
                \\ movq %%r15, 40(%%rcx)
                \\ popq %%r15
                \\ popq %%r14
                \\ popq %%r13
                \\ popq %%r12
                \\ popq %%rbp
                \\ popq %%rbx
                \\ retq
            );
        }
    },
    .aarch64 => struct {
        // x0=from x1=to x2=switch x3=out x4=seed
        noinline fn probe(_: *Context, _: *Context, _: SwitchFn, _: *[probe_regs]u64, _: u64) callconv(.naked) void {
            asm volatile (
                \\ sub sp, sp, #176
                \\ stp x19, x20, [sp, #0]
                \\ stp x21, x22, [sp, #16]
                \\ stp x23, x24, [sp, #32]
                \\ stp x25, x26, [sp, #48]
                \\ stp x27, x28, [sp, #64]
                \\ stp x29, x30, [sp, #80]
                \\ stp d8, d9, [sp, #96]
                \\ stp d10, d11, [sp, #112]
                \\ stp d12, d13, [sp, #128]
                \\ stp d14, d15, [sp, #144]
                \\ str x3, [sp, #160]
                \\ add x19, x4, #0
                \\ add x20, x4, #1
                \\ add x21, x4, #2
                \\ add x22, x4, #3
                \\ add x23, x4, #4
                \\ add x24, x4, #5
                \\ add x25, x4, #6
                \\ add x26, x4, #7
                \\ add x27, x4, #8
                \\ add x28, x4, #9
                \\ add x29, x4, #10
                \\ fmov d8, x19
                \\ fmov d9, x20
                \\ fmov d10, x21
                \\ fmov d11, x22
                \\ fmov d12, x23
                \\ fmov d13, x24
                \\ fmov d14, x25
                \\ fmov d15, x26
                \\ blr x2
                \\ ldr x3, [sp, #160]
                \\ stp x19, x20, [x3, #0]
                \\ stp x21, x22, [x3, #16]
                \\ stp x23, x24, [x3, #32]
                \\ stp x25, x26, [x3, #48]
                \\ stp x27, x28, [x3, #64]
                \\ str x29, [x3, #80]
                \\ str d8, [x3, #88]
                \\ str d9, [x3, #96]
                \\ str d10, [x3, #104]
                \\ str d11, [x3, #112]
                \\ str d12, [x3, #120]
                \\ str d13, [x3, #128]
                \\ str d14, [x3, #136]
                \\ str d15, [x3, #144]
                \\ ldp x19, x20, [sp, #0]
                \\ ldp x21, x22, [sp, #16]
                \\ ldp x23, x24, [sp, #32]
                \\ ldp x25, x26, [sp, #48]
                \\ ldp x27, x28, [sp, #64]
                \\ ldp x29, x30, [sp, #80]
                \\ ldp d8, d9, [sp, #96]
                \\ ldp d10, d11, [sp, #112]
                \\ ldp d12, d13, [sp, #128]
                \\ ldp d14, d15, [sp, #144]
                \\ add sp, sp, #176
                \\ ret
            );
        }
    },
    else => unreachable,
};

const probe: Probe = @ptrCast(&probe_impl.probe);

const RegTest = struct {
    var main_ctx: Context = .{};
    var co_ctx: Context = .{};
    var switch_fn: SwitchFn = switch_plain;
    var co_out: [probe_regs]u64 = undefined;
    var co_bad: usize = 0;
    const co_seed: u64 = 0x5A5A_0000_0000_0000;

    fn coEntry(_: usize) callconv(.c) noreturn {
        var round: u64 = 0;
        while (true) : (round += 1) {
            const seed = co_seed + round * 64;
            probe(&co_ctx, &main_ctx, switch_fn, &co_out, seed);
            for (co_out, 0..) |v, i| {
                if (v != expected(seed, i)) co_bad += 1;
            }
        }
    }

    fn run(sw: SwitchFn) !void {
        switch_fn = sw;
        co_bad = 0;
        const stack = try std.testing.allocator.alignedAlloc(u8, .@"16", 64 * 1024);
        defer std.testing.allocator.free(stack);
        init(&co_ctx, @intFromPtr(stack.ptr) + stack.len, @intFromPtr(&coEntry), 0);
        var out: [probe_regs]u64 = undefined;
        for (0..100) |round| {
            const seed: u64 = 0x1000 + round * 64;
            probe(&main_ctx, &co_ctx, sw, &out, seed);
            for (out, 0..) |v, i| try std.testing.expectEqual(expected(seed, i), v);
        }
        try std.testing.expectEqual(@as(usize, 0), co_bad);
    }
};

test "callee-saved registers survive switches (plain)" {
    try RegTest.run(switch_plain);
}

test "callee-saved registers survive switches (fp)" {
    try RegTest.run(switch_fp);
}

// FP control state: with `switch_fp` each side keeps its own; with `switch_plain` a change made
// on one side is what the other side sees (the documented rule for coroutines without it).
const FpTest = struct {
    var main_ctx: Context = .{};
    var co_ctx: Context = .{};
    var switch_fn: SwitchFn = switch_plain;
    var seen_at_start: u64 = 0;
    var seen_after_resume: u64 = 0;

    fn coEntry(_: usize) callconv(.c) noreturn {
        seen_at_start = readFpControl();
        writeFpControl(true); // the coroutine switches to round-toward-zero
        switch_fn(&co_ctx, &main_ctx);
        seen_after_resume = readFpControl();
        writeFpControl(false);
        switch_fn(&co_ctx, &main_ctx);
        unreachable; // not resumed again
    }

    /// Returns what main saw after the coroutine's first suspension.
    fn run(sw: SwitchFn) !u64 {
        switch_fn = sw;
        const stack = try std.testing.allocator.alignedAlloc(u8, .@"16", 64 * 1024);
        defer std.testing.allocator.free(stack);
        init(&co_ctx, @intFromPtr(stack.ptr) + stack.len, @intFromPtr(&coEntry), 0);
        writeFpControl(false);
        const default = readFpControl();
        switch_fn(&main_ctx, &co_ctx);
        const seen_by_main = readFpControl();
        writeFpControl(false); // main insists on the default before resuming
        switch_fn(&main_ctx, &co_ctx);
        writeFpControl(false);
        try std.testing.expectEqual(default, seen_at_start);
        return seen_by_main;
    }
};

test "FP control state is per coroutine with switch_fp" {
    writeFpControl(false);
    const default = readFpControl();
    const seen_by_main = try FpTest.run(switch_fp);
    try std.testing.expectEqual(default, seen_by_main); // the coroutine's change stayed inside
    writeFpControl(true);
    const odd = readFpControl();
    writeFpControl(false);
    try std.testing.expectEqual(odd, FpTest.seen_after_resume); // and came back on resume
}

test "FP control state is shared with switch_plain (the documented rule)" {
    writeFpControl(true);
    const odd = readFpControl();
    writeFpControl(false);
    const default = readFpControl();
    const seen_by_main = try FpTest.run(switch_plain);
    try std.testing.expectEqual(odd, seen_by_main); // leaked to the resumer
    try std.testing.expectEqual(default, FpTest.seen_after_resume); // main's reset leaked in
}

// The trap: anything returning past the trampoline lands on an illegal instruction. Checked in a
// forked child, which must die of SIGILL.
fn expectDiesOfSigill(comptime body: fn () void) !void {
    const pid = try std.posix.fork();
    if (pid == 0) {
        // The test runner's own SIGILL handler would turn the signal into a panic; the child
        // wants the kernel's default action, so that the parent sees SIGILL itself.
        const dfl: std.posix.Sigaction = .{
            .handler = .{ .handler = std.posix.SIG.DFL },
            .mask = std.posix.sigemptyset(),
            .flags = 0,
        };
        std.posix.sigaction(std.posix.SIG.ILL, &dfl, null);
        std.posix.setrlimit(.CORE, .{ .cur = 0, .max = 0 }) catch {}; // no core file
        body();
        std.posix.exit(0); // not reached when the trap works
    }
    const res = try test_wait.waitChild(pid, test_wait.test_ns, "the forked child");
    try std.testing.expect(std.posix.W.IFSIGNALED(res.status));
    try std.testing.expectEqual(@as(u32, std.posix.SIG.ILL), std.posix.W.TERMSIG(res.status));
}

const TrapTest = struct {
    var main_ctx: Context = .{};
    var co_ctx: Context = .{};
    var stack: [16 * 1024]u8 align(16) = undefined;

    /// Code that returns straight from the initial frame.
    fn justReturn() callconv(.naked) noreturn {
        switch (builtin.cpu.arch) {
            .x86_64 => asm volatile ("retq"),
            .aarch64 => asm volatile ("ret"),
            else => unreachable,
        }
    }

    /// An entry function that (wrongly) returns to the trampoline.
    fn entryReturns(_: usize) callconv(.c) void {}

    fn returnPastFrame() void {
        initRaw(&co_ctx, @intFromPtr(&stack) + stack.len, @intFromPtr(&justReturn), 0, 0);
        switch_plain(&main_ctx, &co_ctx);
    }

    fn returnIntoTrampoline() void {
        init(&co_ctx, @intFromPtr(&stack) + stack.len, @intFromPtr(&entryReturns), 0);
        switch_plain(&main_ctx, &co_ctx);
    }
};

test "a return from the initial frame hits the trap" {
    try expectDiesOfSigill(TrapTest.returnPastFrame);
}

test "an entry that returns into the trampoline hits the trap" {
    try expectDiesOfSigill(TrapTest.returnIntoTrampoline);
}

//! AArch64 (AAPCS64) context switch and initial frame. Nothing else lives in this file.
//!
//! A `Context` holds exactly what AAPCS64 says a callee must preserve: x19-x28, the frame
//! pointer x29, the link register x30, sp, and the low 64 bits of v8-v15 (d8-d15), plus the
//! resume address. FPCR is saved only by `switchFp`.
//!
//! | offset | field   | register                              |
//! |-------:|---------|---------------------------------------|
//! |      0 | sp      | sp                                    |
//! |      8 | pc      | resume address (x30 at the switch)    |
//! |  16-87 | x19-x27 | x19 .. x27 (8 bytes each)             |
//! |     88 | x28     | x28                                   |
//! |     96 | x29     | frame pointer                         |
//! |    104 | x30     | link register                         |
//! | 112-175| d8-d15  | d8 .. d15                             |
//! |    176 | fpcr    | FPCR (only `switchFp` touches it)     |
//!
//! Size: 184 bytes. The switch resumes with `br` through a scratch register rather than `ret`,
//! so that the return-address predictor is not consulted for a return into another stack.
//!
//! Initial frame of a new coroutine (`top` is 16-byte aligned): sp = top, pc = trampoline,
//! x19 = argument, x20 = entry function, x29 = 0, x30 = &trap. The trampoline calls
//! `entry(argument)` and never expects it to return; a return lands on `udf` (SIGILL), and so
//! does any `ret` through the initial link register.
const std = @import("std");

pub const Context = extern struct {
    sp: usize = 0,
    pc: usize = 0,
    x19: [10]usize = @splat(0), // x19 .. x28
    x29: usize = 0,
    x30: usize = 0,
    d8: [8]u64 = @splat(0), // d8 .. d15
    /// FPCR default: round to nearest, no traps, no flush-to-zero.
    fpcr: u64 = 0,
};

comptime {
    // The asm below hard-codes these offsets.
    std.debug.assert(@offsetOf(Context, "sp") == 0);
    std.debug.assert(@offsetOf(Context, "pc") == 8);
    std.debug.assert(@offsetOf(Context, "x19") == 16);
    std.debug.assert(@offsetOf(Context, "x29") == 96);
    std.debug.assert(@offsetOf(Context, "x30") == 104);
    std.debug.assert(@offsetOf(Context, "d8") == 112);
    std.debug.assert(@offsetOf(Context, "fpcr") == 176);
    std.debug.assert(@sizeOf(Context) == 184);
}

// The switch, in pieces shared by both variants (comptime string concatenation).
const save_regs =
    \\ mov x9, sp
    \\ str x9, [x0, #0]
    \\ str x30, [x0, #8]
    \\ stp x19, x20, [x0, #16]
    \\ stp x21, x22, [x0, #32]
    \\ stp x23, x24, [x0, #48]
    \\ stp x25, x26, [x0, #64]
    \\ stp x27, x28, [x0, #80]
    \\ stp x29, x30, [x0, #96]
    \\ stp d8, d9, [x0, #112]
    \\ stp d10, d11, [x0, #128]
    \\ stp d12, d13, [x0, #144]
    \\ stp d14, d15, [x0, #160]
    \\
;
const save_fp =
    \\ mrs x10, fpcr
    \\ str x10, [x0, #176]
    \\
;
const load_regs =
    \\ ldp x19, x20, [x1, #16]
    \\ ldp x21, x22, [x1, #32]
    \\ ldp x23, x24, [x1, #48]
    \\ ldp x25, x26, [x1, #64]
    \\ ldp x27, x28, [x1, #80]
    \\ ldp x29, x30, [x1, #96]
    \\ ldp d8, d9, [x1, #112]
    \\ ldp d10, d11, [x1, #128]
    \\ ldp d12, d13, [x1, #144]
    \\ ldp d14, d15, [x1, #160]
    \\
;
const load_fp =
    \\ ldr x10, [x1, #176]
    \\ msr fpcr, x10
    \\
;
const jump =
    \\ ldr x9, [x1, #0]
    \\ mov sp, x9
    \\ ldr x9, [x1, #8]
    \\ br x9
;

/// Saves the callee-saved registers into `from` (x0) and resumes `to` (x1).
pub noinline fn switchPlain(_: *Context, _: *Context) callconv(.naked) void {
    asm volatile (save_regs ++ load_regs ++ jump);
}

/// Like `switchPlain`, and also saves/restores FPCR.
pub noinline fn switchFp(_: *Context, _: *Context) callconv(.naked) void {
    asm volatile (save_regs ++ save_fp ++ load_regs ++ load_fp ++ jump);
}

/// First code a new coroutine runs: `entry(argument)`; the entry never returns.
noinline fn trampoline() callconv(.naked) noreturn {
    asm volatile (
        \\ mov x0, x19
        \\ blr x20
        \\ udf #0
    );
}

/// Where a `ret` through the initial link register lands.
pub noinline fn trap() callconv(.naked) noreturn {
    asm volatile ("udf #0");
}

/// Prepares `ctx` so that switching to it runs `pc` on the stack ending at `top`, with the
/// initial frame in the header. `pc` is normally the trampoline (`init`); tests pass other code.
pub fn initRaw(ctx: *Context, top: usize, pc: usize, arg: usize, entry: usize) void {
    std.debug.assert(top % 16 == 0);
    std.debug.assert(pc != 0);
    ctx.* = .{};
    ctx.sp = top;
    ctx.pc = pc;
    ctx.x19[0] = arg;
    ctx.x19[1] = entry;
    ctx.x29 = 0;
    ctx.x30 = @intFromPtr(&trap);
}

/// Prepares `ctx` to call `entry(arg)` through the trampoline on the stack ending at `top`.
pub fn init(ctx: *Context, top: usize, entry: usize, arg: usize) void {
    initRaw(ctx, top, @intFromPtr(&trampoline), arg, entry);
}

/// Reads FPCR (for tests).
pub fn readFpControl() u64 {
    return asm volatile ("mrs %[r], fpcr"
        : [r] "=r" (-> u64),
    );
}

/// Sets FPCR (for tests): round-toward-zero (RMode = 0b11, bits 22-23) when `odd`.
pub fn writeFpControl(odd: bool) void {
    const v: u64 = if (odd) (3 << 22) else 0;
    asm volatile ("msr fpcr, %[v]"
        :
        : [v] "r" (v),
    );
}

//! x86_64 (System V) context switch and initial frame. Nothing else lives in this file.
//!
//! A `Context` holds exactly the state the SysV ABI says a callee must preserve, plus the
//! resume address. Caller-saved registers are dead across the `call` into the switch, so they
//! are neither saved nor restored.
//!
//! | offset | field  | register                                      |
//! |-------:|--------|-----------------------------------------------|
//! |      0 | sp     | rsp as it will be after the switch "returns"  |
//! |      8 | pc     | the resume address (the switch's return addr) |
//! |     16 | rbx    | rbx                                           |
//! |     24 | rbp    | rbp                                           |
//! |     32 | r12    | r12                                           |
//! |     40 | r13    | r13                                           |
//! |     48 | r14    | r14                                           |
//! |     56 | r15    | r15                                           |
//! |     64 | mxcsr  | SSE control/status (only `switchFp` touches)  |
//! |     68 | fpucw  | x87 control word (only `switchFp` touches)    |
//!
//! Size: 72 bytes. The switch returns through `jmp *pc` rather than `ret`: a `ret` into another
//! stack always mispredicts the return-stack buffer (7-8 ns against 2.5 ns on these machines,
//! `./task bench` prints both).
//!
//! Initial frame of a new coroutine (stack grows down, `top` is 16-byte aligned):
//!
//!     top - 8   0            (fake frame end for unwinders)
//!     top - 16  &trap        <- sp; a `ret` from the entry frame lands on `ud2`
//!     pc = trampoline, rbx = argument, r12 = entry function, rbp = 0
//!
//! The trampoline calls `entry(argument)` with a correctly aligned stack (rsp = 0 mod 16 before
//! the `call`). The entry must never return; if it does, the `ud2` after the call traps (SIGILL).
const std = @import("std");

pub const Context = extern struct {
    sp: usize = 0,
    pc: usize = 0,
    rbx: usize = 0,
    rbp: usize = 0,
    r12: usize = 0,
    r13: usize = 0,
    r14: usize = 0,
    r15: usize = 0,
    /// MXCSR default: all exceptions masked, round to nearest.
    mxcsr: u32 = 0x1F80,
    /// x87 control word default: all exceptions masked, 64-bit precision, round to nearest.
    fpucw: u16 = 0x037F,
    _pad: u16 = 0,
};

comptime {
    // The asm below hard-codes these offsets.
    std.debug.assert(@offsetOf(Context, "sp") == 0);
    std.debug.assert(@offsetOf(Context, "pc") == 8);
    std.debug.assert(@offsetOf(Context, "rbx") == 16);
    std.debug.assert(@offsetOf(Context, "rbp") == 24);
    std.debug.assert(@offsetOf(Context, "r12") == 32);
    std.debug.assert(@offsetOf(Context, "r13") == 40);
    std.debug.assert(@offsetOf(Context, "r14") == 48);
    std.debug.assert(@offsetOf(Context, "r15") == 56);
    std.debug.assert(@offsetOf(Context, "mxcsr") == 64);
    std.debug.assert(@offsetOf(Context, "fpucw") == 68);
    std.debug.assert(@sizeOf(Context) == 72);
}

// The switch, in pieces shared by `switchPlain` and `switchRet` (comptime string concatenation).
//
// Order (AMD Zen): everything the target needs (its sp and six registers) is read into the
// caller-saved scratch registers BEFORE anything is written to `from`; then `from` is saved; then
// the scratch values are installed. With the plain order (save `from`, then load `to` straight
// into the registers) the switch ran at 0.67-0.82x Boost's jump_fcontext on an AMD EPYC (Zen 4,
// family 25 model 17, KVM) and at 0.36-0.53x with this one (ratios of the min and of the
// median, alternating passes on the same host; the commit that made this order lists the
// other variants tried).
// On Zen the register loads placed after the six register stores come late, and the resumed code
// needs those registers at once (in a ping-pong they hold its next switch's pointers): loading
// just the registers the resumed loop uses first gave the whole gain; loading sp and pc first
// gave none. It is the same code running on both sides that costs: with each side switching
// through its own copy of the plain order, the loads were as fast as here. So Zen most likely
// ties each load to the store instruction that wrote its value last time (the same `movq
// %rbx, 16(%rdi)`, one switch earlier, for the other context) and then waits for, or takes
// its value from, that instruction's newest instance: the store this switch just made to
// `from`. Loaded first, the newest instance is the right one. (No hardware counters in that VM
// to confirm it.) The six extra moves are register-to-register.
//
// It requires `from != to` (a switch to itself would install the values saved before); every
// caller switches between two different contexts (coroutine.zig: `caller` and `ctx`). rbx and
// rbp serve as the save's scratch once they are stored, as all seven caller-saved scratch
// registers (rax rcx rdx r8-r11) hold the target's values by then.
const load_target =
    \\ movq 0(%%rsi), %%rax
    \\ movq 16(%%rsi), %%rcx
    \\ movq 24(%%rsi), %%rdx
    \\ movq 32(%%rsi), %%r8
    \\ movq 40(%%rsi), %%r9
    \\ movq 48(%%rsi), %%r10
    \\ movq 56(%%rsi), %%r11
    \\
;
const save_gprs =
    \\ movq %%rbx, 16(%%rdi)
    \\ movq %%rbp, 24(%%rdi)
    \\ movq (%%rsp), %%rbx
    \\ leaq 8(%%rsp), %%rbp
    \\ movq %%rbx, 8(%%rdi)
    \\ movq %%rbp, 0(%%rdi)
    \\ movq %%r12, 32(%%rdi)
    \\ movq %%r13, 40(%%rdi)
    \\ movq %%r14, 48(%%rdi)
    \\ movq %%r15, 56(%%rdi)
    \\
;
const install_gprs =
    \\ movq %%rcx, %%rbx
    \\ movq %%rdx, %%rbp
    \\ movq %%r8, %%r12
    \\ movq %%r9, %%r13
    \\ movq %%r10, %%r14
    \\ movq %%r11, %%r15
    \\
;
const jump =
    \\ movq %%rax, %%rsp
    \\ jmpq *8(%%rsi)
;

/// Saves the callee-saved registers into `from` (rdi) and resumes `to` (rsi), which must be a
/// different context (`to` is read before `from` is written). Returns, in `from`'s thread of
/// control, when something later switches back to `from`.
pub noinline fn switchPlain(_: *Context, _: *Context) callconv(.naked) void {
    asm volatile (load_target ++ save_gprs ++ install_gprs ++ jump);
}

/// Like `switchPlain`, and also saves/restores MXCSR and the x87 control word.
///
/// It keeps the plain order (save `from`, then load `to`): its cost is the MXCSR reload (README,
/// Figures), and on the Zen 4 host the load-first order of `switchPlain` did not pay here. In
/// alternating passes the medians were 1.00-1.10x Boost's jump_fcontext with this order,
/// 1.06-1.19x with the load-first one and 1.02-1.08x with the FP pair moved last (no clear win).
pub noinline fn switchFp(_: *Context, _: *Context) callconv(.naked) void {
    asm volatile (
        \\ movq (%%rsp), %%rdx
        \\ leaq 8(%%rsp), %%rcx
        \\ movq %%rcx, 0(%%rdi)
        \\ movq %%rdx, 8(%%rdi)
        \\ movq %%rbx, 16(%%rdi)
        \\ movq %%rbp, 24(%%rdi)
        \\ movq %%r12, 32(%%rdi)
        \\ movq %%r13, 40(%%rdi)
        \\ movq %%r14, 48(%%rdi)
        \\ movq %%r15, 56(%%rdi)
        \\ stmxcsr 64(%%rdi)
        \\ fnstcw 68(%%rdi)
        \\ movq 16(%%rsi), %%rbx
        \\ movq 24(%%rsi), %%rbp
        \\ movq 32(%%rsi), %%r12
        \\ movq 40(%%rsi), %%r13
        \\ movq 48(%%rsi), %%r14
        \\ movq 56(%%rsi), %%r15
        \\ ldmxcsr 64(%%rsi)
        \\ fldcw 68(%%rsi)
        \\ movq 0(%%rsi), %%rsp
        \\ jmpq *8(%%rsi)
    );
}

/// The same switch, returning with `ret` (kept only so the bench can show why we do not); the
/// same order as `switchPlain`, so that the two differ in the return alone.
pub noinline fn switchRet(_: *Context, _: *Context) callconv(.naked) void {
    asm volatile (load_target ++
            \\ movq %%rsp, 0(%%rdi)
            \\ movq %%rbx, 16(%%rdi)
            \\ movq %%rbp, 24(%%rdi)
            \\ movq %%r12, 32(%%rdi)
            \\ movq %%r13, 40(%%rdi)
            \\ movq %%r14, 48(%%rdi)
            \\ movq %%r15, 56(%%rdi)
            \\
        ++ install_gprs ++
            \\ movq %%rax, %%rsp
            \\ retq
    );
}

/// First code a new coroutine runs: `entry(argument)`; the entry never returns.
noinline fn trampoline() callconv(.naked) noreturn {
    asm volatile (
        \\ movq %%rbx, %%rdi
        \\ callq *%%r12
        \\ ud2
    );
}

/// Where a `ret` past the trampoline lands.
pub noinline fn trap() callconv(.naked) noreturn {
    asm volatile ("ud2");
}

/// Prepares `ctx` so that switching to it runs `pc` on the stack ending at `top`, with the
/// initial frame in the header. `pc` is normally the trampoline (`init`); tests pass other code.
pub fn initRaw(ctx: *Context, top: usize, pc: usize, arg: usize, entry: usize) void {
    std.debug.assert(top % 16 == 0);
    std.debug.assert(pc != 0);
    const sp = top - 16;
    const slots: *[2]usize = @ptrFromInt(sp);
    slots[0] = @intFromPtr(&trap);
    slots[1] = 0;
    ctx.* = .{};
    ctx.sp = sp;
    ctx.pc = pc;
    ctx.rbx = arg;
    ctx.r12 = entry;
    ctx.rbp = 0;
}

/// Prepares `ctx` for `switchRet`, which resumes by `ret` through the saved sp (bench only).
pub fn initRet(ctx: *Context, top: usize, entry: usize, arg: usize) void {
    std.debug.assert(top % 16 == 0);
    const sp = top - 24;
    const slots: *[3]usize = @ptrFromInt(sp);
    slots[0] = @intFromPtr(&trampoline);
    slots[1] = @intFromPtr(&trap);
    slots[2] = 0;
    ctx.* = .{};
    ctx.sp = sp;
    ctx.rbx = arg;
    ctx.r12 = entry;
}

/// Prepares `ctx` to call `entry(arg)` through the trampoline on the stack ending at `top`.
pub fn init(ctx: *Context, top: usize, entry: usize, arg: usize) void {
    initRaw(ctx, top, @intFromPtr(&trampoline), arg, entry);
}

/// Reads the current FP control state (for tests): MXCSR in the low 32 bits, x87 CW above.
pub fn readFpControl() u64 {
    var mxcsr: u32 = 0;
    var cw: u16 = 0;
    asm volatile (
        \\ stmxcsr (%[m])
        \\ fnstcw (%[c])
        :
        : [m] "r" (&mxcsr),
          [c] "r" (&cw),
        : .{ .memory = true });
    return @as(u64, mxcsr) | (@as(u64, cw) << 32);
}

/// Sets the FP control state (for tests): round-toward-zero when `odd`, default otherwise.
pub fn writeFpControl(odd: bool) void {
    const mxcsr: u32 = if (odd) 0x7F80 else 0x1F80; // RC bits 13-14 = 11: toward zero
    const cw: u16 = if (odd) 0x0F7F else 0x037F; // RC bits 10-11 = 11: toward zero
    asm volatile (
        \\ ldmxcsr (%[m])
        \\ fldcw (%[c])
        :
        : [m] "r" (&mxcsr),
          [c] "r" (&cw),
        : .{ .memory = true });
}

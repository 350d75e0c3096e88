//! kcoro's Zig API: the package root that Zig programs, the bench executable and the C ABI
//! (`root.zig`) import. Everything here is usable without the C ABI.
//!
//! Where to start: `scheduler.Scheduler` (`start`, `spawn`, `sleep`, `drainFor`, `shutdown`)
//! runs coroutines on worker threads; `channel.Channel` (`create`, `send`, `receive`, `close`,
//! `cancel`, `snapshot`, `destroy`) and `channel.select` move values between coroutines and
//! plain threads; `scope.Scope` (`create`, `launch`, `cancel`, `waitAll`, `release`) is
//! structured concurrency; `cancel.Token` interrupts a wait. Hand-driven coroutines (resumed by
//! you, no scheduler) are `Registry` or `Coroutine`. An entry is a `coroutine.EntryFn`:
//! `fn (?*anyopaque) callconv(.c) void`, so a failure is the entry's to record (nothing is
//! unwound or propagated; a child that fails cancels its scope if its siblings should stop).
//! A blocking call parks a coroutine and blocks a plain thread; deadlines are absolute
//! `scheduler.monotonicNs()` values. Values are copied in and out of channels `elem_size`
//! bytes at a time: `ch.sendValue(T, v, .{})` and `ch.receiveValue(T, .{})` take and return a
//! `T` and are error.InvalidArgument when `@sizeOf(T)` is not `elem_size`; `send` and `receive`
//! take a bare pointer (`std.mem.asBytes(&v)`) and cannot check that it reaches that many.

/// The context switch (x86_64, AArch64): internal to `coroutine`.
pub const arch = @import("coro/switch.zig");
/// Coroutine stacks: pools of guarded or slab stacks (`stack.Mode`), 16 KiB to 256 MiB.
pub const stack = @import("coro/stack.zig");
/// A stackful coroutine (`Coroutine`, `EntryFn`) and what runs inside one: `yield`,
/// `yieldValue`, `park`, `current`.
pub const coroutine = @import("coro/coroutine.zig");
/// Hand-driven coroutines named by handles (`Registry.create`, `get`, `destroy`).
pub const registry = @import("coro/registry.zig");
/// The generation-counted handle tables behind every handle (`[kind:3][generation:9][index:20]`).
pub const handle = @import("handle.zig");
/// The C ABI's status codes (`KC_*`) and their names.
pub const status = @import("status.zig");
/// The scheduler's work-stealing deque: internal to `scheduler`.
pub const deque = @import("sched/deque.zig");
/// The work-stealing scheduler: `Scheduler`, `Options`, `monotonicNs` (every deadline's clock).
pub const scheduler = @import("sched/scheduler.zig");
/// Coroutine contexts: the immutable key/value maps a coroutine inherits (scope, token,
/// deadline).
pub const context = @import("sc/context.zig");
/// Cancellation tokens (`cancel.Token`): a wait given one ends with `Interrupted` once it is
/// cancelled.
pub const cancel = @import("sc/cancel.zig");
/// Native scopes (`Scope`): structured concurrency, `current`, `currentToken`,
/// `currentDeadline` and `sleepUntil` from a child.
pub const scope = @import("sc/scope.zig");
/// Built-in coroutine entries (fib, sleepers, skynet, ...) for the C ABI, tests and benchmarks.
pub const builtins = @import("builtins.zig");
/// Channels (`Channel`, `Options`, `Overflow`), `select` with `Clause`, and `Metrics`.
pub const channel = @import("chan/channel.zig");
/// The C ABI's channel handles: internal to `root.zig`.
pub const channel_registry = @import("chan/registry.zig");
/// Metrics pipes: a periodic snapshot of one channel sent into another.
pub const pipe = @import("chan/pipe.zig");
/// The counters' coarse clock (a process-wide ticker thread, started by the first channel
/// operation that records a time).
pub const clock = @import("chan/clock.zig");
const chan_lock = @import("chan/lock.zig");
/// Completion rings: channel waits for callers that cannot block (JavaScript).
pub const bridge = @import("bridge/ring.zig");
/// The buffer pool of zero-copy descriptors made by the C ABI (`kc_desc_make`).
pub const buffer_pool = @import("bridge/pool.zig");

/// `coroutine.Coroutine`.
pub const Coroutine = coroutine.Coroutine;
/// A coroutine's state (`created`, `ready`, `running`, `suspended`, `parked`, `finished`).
pub const State = coroutine.State;
/// `registry.Registry`.
pub const Registry = registry.Registry;

comptime {
    // Without it a program got a dozen errors from inside kcoro ("unknown size: '%%fs:0'",
    // "TODO implement arg for a:r9") and no word of the cause.
    if (@import("builtin").zig_backend != .stage2_llvm) @compileError(
        "kcoro needs the LLVM backend: build the executable or test with `.use_llvm = true` " ++
            "(README.md, \"The C ABI\", From a Zig package); Zig 0.15's self-hosted backend has " ++
            "no naked functions with parameters, which is what the context switch is",
    );
}

/// Bumped on every incompatible change to the C ABI (`include/kcoro.h`, `ffi/symbols.ts`).
pub const abi_version: u32 = 26;

/// The mode this module was compiled in. As a package dependency (`dep.module("kcoro")`) it is
/// the importing module's (Debug and ReleaseSafe keep kcoro's assertions and a zero-copy channel's
/// ownership checks on) unless `b.dependency("kcoro", ...)` was given `.optimize`; the shared
/// library (`dep.artifact("kcoro")`) is ReleaseFast unless given one.
pub const optimize_mode: @import("std").builtin.OptimizeMode = @import("builtin").mode;

test {
    _ = arch;
    _ = stack;
    _ = coroutine;
    _ = registry;
    _ = handle;
    _ = status;
    _ = deque;
    _ = scheduler;
    _ = context;
    _ = cancel;
    _ = scope;
    _ = builtins;
    _ = channel;
    _ = channel_registry;
    _ = pipe;
    _ = clock;
    _ = chan_lock;
    _ = bridge;
    _ = buffer_pool;
    _ = @import("test_wait.zig");
    _ = @import("tidy.zig");
}

//! kcoro's Zig API: the package root that Zig programs, the bench executable and the C ABI
//! (`root.zig`) import. Everything here is usable without the C ABI.
pub const arch = @import("coro/switch.zig");
pub const stack = @import("coro/stack.zig");
pub const coroutine = @import("coro/coroutine.zig");
pub const registry = @import("coro/registry.zig");
pub const handle = @import("handle.zig");
pub const status = @import("status.zig");
pub const deque = @import("sched/deque.zig");
pub const scheduler = @import("sched/scheduler.zig");
pub const context = @import("sc/context.zig");
pub const cancel = @import("sc/cancel.zig");
pub const scope = @import("sc/scope.zig");
pub const builtins = @import("builtins.zig");
pub const channel = @import("chan/channel.zig");
pub const channel_registry = @import("chan/registry.zig");
pub const pipe = @import("chan/pipe.zig");
pub const clock = @import("chan/clock.zig");
const chan_lock = @import("chan/lock.zig");
pub const bridge = @import("bridge/ring.zig");
pub const buffer_pool = @import("bridge/pool.zig");

pub const Coroutine = coroutine.Coroutine;
pub const State = coroutine.State;
pub const Registry = registry.Registry;

/// Bumped on every incompatible change to the C ABI (`include/kcoro.h`, `ffi/symbols.ts`).
pub const abi_version: u32 = 17;

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
}

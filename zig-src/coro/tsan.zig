//! ThreadSanitizer's fiber annotations, for a build with `sanitize_thread` (`zig build test
//! -Dtsan=true`, x86_64 Linux); in any other build every function here is empty and `Fiber`
//! holds nothing.
//!
//! TSan keeps, per thread, a shadow call stack (pushed and popped by the instrumented entry and
//! exit of every function) and a vector clock. The context switch moves a thread from one stack
//! to another behind its back: without these annotations the coroutine's pushes stayed on the
//! shadow stack of the thread that resumed it and were popped by whichever thread it moved to,
//! until one ran below its base and the runtime crashed ("General protection exception", the
//! scheduler's park/unpark ping-pong test). So each coroutine is a TSan fiber of its own, and
//! every switch tells TSan first which fiber runs next (`__tsan_switch_to_fiber`).
//!
//! A switch is announced with synchronisation (flags 0): the resumer's accesses before the
//! switch happen before the coroutine's after it, and the coroutine's before it switches back
//! happen before the resumer's after, as they do in the one thread of control that a switch
//! is. That adds no order between threads that the program does not have: a coroutine that
//! moves to another thread still needs the queue or wake-up that moved it to order the two
//! threads' accesses (TSan checks those as usual).
//!
//! Between the announcement and the switch itself nothing instrumented may enter or leave a
//! function (it would land on the wrong fiber's shadow stack): the callers below call
//! `switchTo` right before `switch_fn`, a naked function TSan does not see.
const std = @import("std");
const builtin = @import("builtin");

pub const enabled = builtin.sanitize_thread;

extern fn __tsan_get_current_fiber() ?*anyopaque;
extern fn __tsan_create_fiber(flags: c_uint) ?*anyopaque;
extern fn __tsan_destroy_fiber(fiber: ?*anyopaque) void;
extern fn __tsan_switch_to_fiber(fiber: ?*anyopaque, flags: c_uint) void;

/// A coroutine's TSan state: its own fiber (made at its first resume) and the fiber that
/// resumed it last (where it switches back to). Empty without TSan.
pub const Fiber = if (enabled) struct {
    own: ?*anyopaque = null,
    resumer: ?*anyopaque = null,
} else struct {};

/// Before switching into a coroutine: records the running fiber as its resumer and makes the
/// coroutine's fiber current (creating it at the first resume).
pub inline fn enter(f: *Fiber) void {
    if (!enabled) return;
    f.resumer = __tsan_get_current_fiber();
    if (f.own == null) f.own = __tsan_create_fiber(0);
    __tsan_switch_to_fiber(f.own, 0);
}

/// Before a coroutine switches back to its resumer: makes the resumer's fiber current.
pub inline fn leave(f: *Fiber) void {
    if (!enabled) return;
    std.debug.assert(f.resumer != null); // only a resumed coroutine switches back
    __tsan_switch_to_fiber(f.resumer, 0);
}

/// Asserts `f` holds no fiber: what a new coroutine finds where its stack's previous one gave
/// its fiber back (`destroy`), or in a stack never used.
pub inline fn assertNone(f: *const Fiber) void {
    if (!enabled) return;
    std.debug.assert(f.own == null);
}

/// Frees the fiber of a coroutine that will never run again (finished or abandoned), from
/// another fiber (TSan's rule: never the running one).
pub inline fn destroy(f: *Fiber) void {
    if (!enabled) return;
    if (f.own) |own| {
        std.debug.assert(own != __tsan_get_current_fiber());
        __tsan_destroy_fiber(own);
    }
    f.* = .{};
}

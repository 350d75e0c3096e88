//! Status codes of the C ABI: 0 is success, negative values are named errors. The values are
//! the negated Linux errno of the closest meaning, so C callers can print them with strerror.
//! `include/kcoro.h` and `src/errors.ts` repeat this table; a test checks they agree.
const std = @import("std");

pub const Status = enum(i32) {
    ok = 0,
    /// Called outside a coroutine where a coroutine is required.
    not_coroutine = -1,
    /// The operation's cancellation token was cancelled (it gave up, like a timeout).
    interrupted = -4,
    /// The handle is stale, destroyed, forged or names another kind of object.
    bad_handle = -9,
    /// Would block (try-operations).
    again = -11,
    /// Out of memory or out of handles.
    no_memory = -12,
    /// The object is in a state that does not allow the operation (running, parked, finished).
    busy = -16,
    /// Invalid argument (size out of range, unknown flag bits, null pointer).
    invalid = -22,
    /// The channel is closed.
    closed = -32,
    /// The runtime was shut down.
    shutdown = -108,
    /// The deadline passed.
    timeout = -62,
    /// The operation was cancelled.
    cancelled = -125,

    pub fn name(s: Status) [:0]const u8 {
        return switch (s) {
            .ok => "KC_OK",
            .not_coroutine => "KC_ENOTCORO",
            .interrupted => "KC_EINTR",
            .bad_handle => "KC_EBADH",
            .again => "KC_EAGAIN",
            .no_memory => "KC_ENOMEM",
            .busy => "KC_EBUSY",
            .invalid => "KC_EINVAL",
            .closed => "KC_EPIPE",
            .shutdown => "KC_ESHUTDOWN",
            .timeout => "KC_ETIME",
            .cancelled => "KC_ECANCELED",
        };
    }

    pub fn code(s: Status) i32 {
        return @intFromEnum(s);
    }
};

/// The name kc_status_name gives `code`: a status's (`KC_OK`, `KC_E*`), `KC_RESULT` for a
/// positive value (a successful call's result: a count, a state, 1 for yes or for the first
/// time, as kc_scope_cancel's; not an error), `KC_EUNKNOWN` for any other negative value.
pub fn nameOf(code: i32) [:0]const u8 {
    if (code > 0) return "KC_RESULT";
    inline for (@typeInfo(Status).@"enum".fields) |f| {
        if (f.value == code) return @as(Status, @enumFromInt(f.value)).name();
    }
    return "KC_EUNKNOWN";
}

/// Maps any kcoro Zig error to its status code.
pub fn fromError(err: anyerror) Status {
    return switch (err) {
        error.BadHandle => .bad_handle,
        error.OutOfMemory, error.TooManyObjects => .no_memory,
        error.Busy, error.Running, error.NotRunnable, error.Finished => .busy,
        error.InvalidArgument, error.InvalidStackSize => .invalid,
        error.NotInCoroutine => .not_coroutine,
        error.Shutdown => .shutdown,
        error.Timeout => .timeout,
        error.Cancelled => .cancelled,
        error.Interrupted => .interrupted,
        error.Closed => .closed,
        error.WouldBlock => .again,
        else => .invalid,
    };
}

test "nameOf: statuses by name, positive results as KC_RESULT, other values unknown" {
    try std.testing.expectEqualStrings("KC_OK", nameOf(0));
    try std.testing.expectEqualStrings("KC_ECANCELED", nameOf(-125));
    // Before, 1 (kc_scope_cancel's "the first time", kc_coro_unpark's "was parked") was
    // KC_EUNKNOWN, an error's name for a success.
    try std.testing.expectEqualStrings("KC_RESULT", nameOf(1));
    try std.testing.expectEqualStrings("KC_RESULT", nameOf(std.math.maxInt(i32)));
    try std.testing.expectEqualStrings("KC_EUNKNOWN", nameOf(-2));
    try std.testing.expectEqualStrings("KC_EUNKNOWN", nameOf(std.math.minInt(i32)));
}

test "status names are unique and codes negative" {
    inline for (@typeInfo(Status).@"enum".fields) |f| {
        const s: Status = @enumFromInt(f.value);
        if (s != .ok) try std.testing.expect(s.code() < 0);
        try std.testing.expect(std.mem.startsWith(u8, s.name(), "KC_"));
    }
}

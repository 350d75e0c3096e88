//! The C ABI of libkcoro: every `export fn` lives here, and Zig errors become status codes here.
//! `include/kcoro.h` declares the same functions; a test at the bottom checks the two agree.
//!
//! Conventions: functions return `int32_t` status (0 or a positive result on success, a
//! negative `KC_E*` code on failure) unless they can not fail. Objects are named by `uint32_t`
//! handles (see `handle.zig`); nothing a caller passes, however wrong, crashes the process:
//! bad handles, null out-pointers, unknown flags and out-of-range sizes are error codes.
const std = @import("std");
const kcoro = @import("kcoro.zig");

const Status = kcoro.status.Status;
const Registry = kcoro.Registry;
const coroutine = kcoro.coroutine;

pub const abi_version = kcoro.abi_version;

var registry: Registry = undefined;
var registry_once = std.once(initRegistry);

fn initRegistry() void {
    registry = Registry.init(std.heap.c_allocator);
}

fn reg() *Registry {
    registry_once.call();
    return &registry;
}

fn fail(err: anyerror) i32 {
    return kcoro.status.fromError(err).code();
}

/// uint32_t kc_abi_version(void)
export fn kc_abi_version() callconv(.c) u32 {
    return abi_version;
}

/// const char *kc_status_name(int32_t status)
export fn kc_status_name(status: i32) callconv(.c) [*:0]const u8 {
    inline for (@typeInfo(Status).@"enum".fields) |f| {
        if (f.value == status) return @as(Status, @enumFromInt(f.value)).name();
    }
    return "KC_EUNKNOWN";
}

/// int32_t kc_coro_create(kc_entry_fn entry, void *arg, uint32_t stack_size, uint32_t flags,
///                        uint32_t *out_handle)
export fn kc_coro_create(
    entry: ?coroutine.EntryFn,
    arg: ?*anyopaque,
    stack_size: u32,
    flags: u32,
    out_handle: ?*u32,
) callconv(.c) i32 {
    const e = entry orelse return Status.invalid.code();
    const out = out_handle orelse return Status.invalid.code();
    const h = reg().create(e, arg, stack_size, @bitCast(flags)) catch |err| return fail(err);
    out.* = h;
    return 0;
}

/// int32_t kc_coro_resume(uint32_t h): the state after the run (KC_STATE_*), or an error.
export fn kc_coro_resume(h: u32) callconv(.c) i32 {
    const co = reg().get(h) catch |err| return fail(err);
    const s = co.@"resume"() catch |err| return fail(err);
    return @intFromEnum(s);
}

/// int32_t kc_coro_yield(void)
export fn kc_coro_yield() callconv(.c) i32 {
    coroutine.yield() catch |err| return fail(err);
    return 0;
}

/// int32_t kc_coro_yield_value(uint64_t value)
export fn kc_coro_yield_value(value: u64) callconv(.c) i32 {
    coroutine.yieldValue(value) catch |err| return fail(err);
    return 0;
}

/// int32_t kc_coro_park(void)
export fn kc_coro_park() callconv(.c) i32 {
    coroutine.park() catch |err| return fail(err);
    return 0;
}

/// int32_t kc_coro_unpark(uint32_t h): 1 if it moved the coroutine from parked to ready,
/// 0 if it left a permit for its next park.
export fn kc_coro_unpark(h: u32) callconv(.c) i32 {
    const co = reg().get(h) catch |err| return fail(err);
    return @intFromBool(co.unpark());
}

/// int32_t kc_coro_state(uint32_t h)
export fn kc_coro_state(h: u32) callconv(.c) i32 {
    const co = reg().get(h) catch |err| return fail(err);
    return @intFromEnum(co.getState());
}

/// int32_t kc_coro_transfer(uint32_t h, uint64_t *out): the coroutine's transfer word.
export fn kc_coro_transfer(h: u32, out: ?*u64) callconv(.c) i32 {
    const o = out orelse return Status.invalid.code();
    const co = reg().get(h) catch |err| return fail(err);
    o.* = co.transfer;
    return 0;
}

/// int32_t kc_coro_destroy(uint32_t h)
export fn kc_coro_destroy(h: u32) callconv(.c) i32 {
    reg().destroy(h) catch |err| return fail(err);
    return 0;
}

/// uint32_t kc_coro_current(void): the running coroutine's handle, 0 outside one.
export fn kc_coro_current() callconv(.c) u32 {
    const co = coroutine.current() orelse return 0;
    return co.handle;
}

/// int32_t kc_coro_stats(uint64_t *out, uint32_t len): fills up to `len` of
/// [live coroutines, pooled free stacks, stack mappings]; returns how many it wrote.
export fn kc_coro_stats(out: ?[*]u64, len: u32) callconv(.c) i32 {
    const o = out orelse return Status.invalid.code();
    const s = reg().stats();
    const vals = [_]u64{ s.live, s.pooled_stacks, s.mappings };
    const n = @min(len, vals.len);
    for (0..n) |i| o[i] = vals[i];
    return @intCast(n);
}

// ---------------------------------------------------------------------------------------------
// Built-in native entry functions, for callers (TypeScript among them) that have no native code
// of their own to run. `arg` is read as an integer.

pub const Builtin = enum(u32) {
    /// Yields the first `arg` Fibonacci numbers through the transfer word, then finishes.
    fib = 1,
    /// Yields forever; the transfer word counts the yields.
    yield_loop = 2,
    /// Parks `arg` times, counting wake-ups in the transfer word, then finishes.
    park_loop = 3,
};

fn builtinFib(arg: ?*anyopaque) callconv(.c) void {
    const n = @intFromPtr(arg);
    var a: u64 = 0;
    var b: u64 = 1;
    for (0..n) |_| {
        coroutine.yieldValue(a) catch unreachable; // we run as a coroutine
        const next = a +% b;
        a = b;
        b = next;
    }
}

fn builtinYieldLoop(_: ?*anyopaque) callconv(.c) void {
    var i: u64 = 0;
    while (true) {
        i += 1;
        coroutine.yieldValue(i) catch unreachable; // we run as a coroutine
    }
}

fn builtinParkLoop(arg: ?*anyopaque) callconv(.c) void {
    const n = @intFromPtr(arg);
    const co = coroutine.current().?;
    for (0..n) |_| {
        coroutine.park() catch unreachable; // we run as a coroutine
        co.transfer += 1;
    }
}

/// const void *kc_builtin_entry(uint32_t id): a built-in entry function, or NULL.
export fn kc_builtin_entry(id: u32) callconv(.c) ?*const anyopaque {
    const b = std.meta.intToEnum(Builtin, id) catch return null;
    return switch (b) {
        .fib => @ptrCast(&builtinFib),
        .yield_loop => @ptrCast(&builtinYieldLoop),
        .park_loop => @ptrCast(&builtinParkLoop),
    };
}

// ---------------------------------------------------------------------------------------------
// Tests: the C header agrees with these exports.

const testing = std.testing;

test {
    _ = kcoro;
}

test "include/kcoro.h agrees with the exports" {
    const c = @cImport(@cInclude("kcoro.h"));
    try testing.expectEqual(abi_version, c.KC_ABI_VERSION);
    inline for (@typeInfo(Status).@"enum".fields) |f| {
        const s: Status = @enumFromInt(f.value);
        try testing.expectEqual(s.code(), @field(c, s.name()));
    }
    inline for (@typeInfo(coroutine.State).@"enum".fields) |f| {
        var buf: [64]u8 = undefined;
        _ = &buf;
        const name = comptime blk: {
            var up: [f.name.len]u8 = undefined;
            for (f.name, 0..) |ch, i| up[i] = std.ascii.toUpper(ch);
            break :blk "KC_STATE_" ++ up;
        };
        try testing.expectEqual(@as(c_int, f.value), @field(c, name));
    }
    inline for (@typeInfo(Builtin).@"enum".fields) |f| {
        const name = comptime blk: {
            var up: [f.name.len]u8 = undefined;
            for (f.name, 0..) |ch, i| up[i] = std.ascii.toUpper(ch);
            break :blk "KC_BUILTIN_" ++ up;
        };
        try testing.expectEqual(@as(c_int, f.value), @field(c, name));
    }
    const decls = .{
        "kc_abi_version", "kc_status_name",      "kc_coro_create",  "kc_coro_resume",
        "kc_coro_yield",  "kc_coro_yield_value", "kc_coro_park",    "kc_coro_unpark",
        "kc_coro_state",  "kc_coro_transfer",    "kc_coro_destroy", "kc_coro_current",
        "kc_coro_stats",  "kc_builtin_entry",
    };
    inline for (decls) |name| {
        const H = @typeInfo(@TypeOf(@field(c, name))).@"fn";
        const Z = @typeInfo(@TypeOf(@field(@This(), name))).@"fn";
        try testing.expectEqual(Z.params.len, H.params.len);
        inline for (Z.params, H.params) |zp, hp| {
            try testing.expectEqual(@sizeOf(zp.type.?), @sizeOf(hp.type.?));
        }
        try testing.expectEqual(@sizeOf(Z.return_type.?), @sizeOf(H.return_type.?));
    }
}

test "C ABI: create, resume, transfer, destroy; bad handles are errors" {
    var h: u32 = 0;
    const fib = kc_builtin_entry(@intFromEnum(Builtin.fib));
    try testing.expect(fib != null);
    try testing.expectEqual(@as(i32, 0), kc_coro_create(@ptrCast(@alignCast(fib)), @ptrFromInt(5), 0, 0, &h));
    var v: u64 = 0;
    const want = [_]u64{ 0, 1, 1, 2, 3 };
    for (want) |w| {
        try testing.expectEqual(@as(i32, @intFromEnum(coroutine.State.suspended)), kc_coro_resume(h));
        try testing.expectEqual(@as(i32, 0), kc_coro_transfer(h, &v));
        try testing.expectEqual(w, v);
    }
    try testing.expectEqual(@as(i32, @intFromEnum(coroutine.State.finished)), kc_coro_resume(h));
    try testing.expectEqual(Status.busy.code(), kc_coro_resume(h));
    try testing.expectEqual(@as(i32, 0), kc_coro_destroy(h));
    try testing.expectEqual(Status.bad_handle.code(), kc_coro_resume(h));
    try testing.expectEqual(Status.bad_handle.code(), kc_coro_destroy(h));
    try testing.expectEqual(Status.bad_handle.code(), kc_coro_state(0));
    try testing.expectEqual(Status.bad_handle.code(), kc_coro_unpark(0xFFFF_FFFF));
    try testing.expectEqual(Status.invalid.code(), kc_coro_create(null, null, 0, 0, &h));
    try testing.expectEqual(Status.invalid.code(), kc_coro_create(@ptrCast(@alignCast(fib)), null, 0, 0, null));
    try testing.expectEqual(Status.invalid.code(), kc_coro_create(@ptrCast(@alignCast(fib)), null, 1, 0, &h));
    try testing.expectEqual(Status.invalid.code(), kc_coro_create(@ptrCast(@alignCast(fib)), null, 0, 1 << 9, &h));
    try testing.expectEqual(Status.not_coroutine.code(), kc_coro_yield());
    try testing.expectEqual(Status.not_coroutine.code(), kc_coro_park());
    try testing.expect(kc_builtin_entry(0) == null);
    try testing.expectEqualStrings("KC_EBADH", std.mem.span(kc_status_name(-9)));
    try testing.expectEqualStrings("KC_EUNKNOWN", std.mem.span(kc_status_name(-9999)));
}

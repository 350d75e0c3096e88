//! Native benchmarks of the coroutine core (no FFI). `zig build bench -- [--json] [--quick]`.
//!
//! Each figure is the best of several runs (the machine is shared and small; the minimum is the
//! least noisy estimate of the cost itself). Printed as a table, or with --json as one JSON
//! object per line: {"name","value","unit","iterations"}.
const std = @import("std");
const kcoro = @import("kcoro");

const sw = kcoro.arch;
const Context = sw.Context;
const SwitchFn = sw.SwitchFn;

const Result = struct { name: []const u8, value: f64, unit: []const u8, iterations: u64 };

var json = false;

fn report(out: *std.Io.Writer, r: Result) !void {
    if (json) {
        try out.print("{{\"name\":\"{s}\",\"value\":{d:.3},\"unit\":\"{s}\",\"iterations\":{d}}}\n", .{ r.name, r.value, r.unit, r.iterations });
    } else {
        try out.print("{s:<44} {d:>10.2} {s}  ({d} iterations)\n", .{ r.name, r.value, r.unit, r.iterations });
    }
    try out.flush();
}

// ---------------------------------------------------------------------------------------------
// Raw switch ping-pong: main <-> one context, `n` round trips, 2n switches.

const PingPong = struct {
    var main_ctx: Context align(64) = .{};
    var co_ctx: Context align(64) = .{};
    var switch_fn: SwitchFn = sw.switch_plain;

    fn entry(_: usize) callconv(.c) noreturn {
        while (true) switch_fn(&co_ctx, &main_ctx);
    }

    fn run(stack: []align(16) u8, f: SwitchFn, n: u64, use_ret: bool) u64 {
        switch_fn = f;
        const top = @intFromPtr(stack.ptr) + stack.len;
        if (use_ret) {
            if (@import("builtin").cpu.arch == .x86_64) {
                sw.impl.initRet(&co_ctx, top, @intFromPtr(&entry), 0);
            } else unreachable;
        } else {
            sw.init(&co_ctx, top, @intFromPtr(&entry), 0);
        }
        switch_fn(&main_ctx, &co_ctx); // warm up and enter the loop
        var timer = std.time.Timer.start() catch unreachable;
        var i: u64 = 0;
        while (i < n) : (i += 1) switch_fn(&main_ctx, &co_ctx);
        return timer.read();
    }
};

fn bestOf(runs: usize, comptime f: anytype, args: anytype) u64 {
    var best: u64 = std.math.maxInt(u64);
    for (0..runs) |_| best = @min(best, @call(.auto, f, args));
    return best;
}

// ---------------------------------------------------------------------------------------------
// Coroutine API: resume + yield round trip, and create-run-destroy.

fn yielder(_: ?*anyopaque) callconv(.c) void {
    while (true) kcoro.coroutine.yield() catch unreachable;
}

fn resumeYield(co: *kcoro.Coroutine, n: u64) u64 {
    var timer = std.time.Timer.start() catch unreachable;
    var i: u64 = 0;
    while (i < n) : (i += 1) _ = co.@"resume"() catch unreachable;
    return timer.read();
}

fn noop(_: ?*anyopaque) callconv(.c) void {}

fn createRunDestroy(reg: *kcoro.Registry, n: u64) u64 {
    var timer = std.time.Timer.start() catch unreachable;
    var i: u64 = 0;
    while (i < n) : (i += 1) {
        const h = reg.create(noop, null, 0, .{}) catch unreachable;
        _ = (reg.get(h) catch unreachable).@"resume"() catch unreachable;
        reg.destroy(h) catch unreachable;
    }
    return timer.read();
}

fn parker(_: ?*anyopaque) callconv(.c) void {
    kcoro.coroutine.park() catch unreachable;
}

fn rssBytes() usize {
    var buf: [128]u8 = undefined;
    const f = std.fs.openFileAbsolute("/proc/self/statm", .{}) catch return 0;
    defer f.close();
    const n = f.readAll(&buf) catch return 0;
    var it = std.mem.tokenizeScalar(u8, buf[0..n], ' ');
    _ = it.next();
    const resident = std.fmt.parseInt(usize, it.next() orelse return 0, 10) catch return 0;
    return resident * std.heap.pageSize();
}

/// Creates `count` coroutines on 16 KiB slab stacks, runs each until it parks, and returns the
/// resident bytes they added per coroutine (stack pages touched + the object on the stack).
fn liveParked(reg: *kcoro.Registry, count: usize, handles: []u32) !f64 {
    const before = rssBytes();
    for (handles[0..count]) |*h| {
        h.* = try reg.create(parker, null, 16 * 1024, .{ .slab_stack = true });
        _ = try (try reg.get(h.*)).@"resume"();
    }
    const after = rssBytes();
    for (handles[0..count]) |h| try reg.destroy(h);
    return @as(f64, @floatFromInt(after - before)) / @as(f64, @floatFromInt(count));
}

fn perOp(ns: u64, ops: u64) f64 {
    return @as(f64, @floatFromInt(ns)) / @as(f64, @floatFromInt(ops));
}

pub fn main() !void {
    var gpa: std.heap.DebugAllocator(.{}) = .init;
    defer _ = gpa.deinit();
    const allocator = gpa.allocator();

    const args = try std.process.argsAlloc(allocator);
    defer std.process.argsFree(allocator, args);
    var quick = false;
    for (args[1..]) |a| {
        if (std.mem.eql(u8, a, "--json")) json = true;
        if (std.mem.eql(u8, a, "--quick")) quick = true;
    }
    const n: u64 = if (quick) 1_000_000 else 10_000_000;
    const runs: usize = if (quick) 3 else 7;

    var buf: [4096]u8 = undefined;
    var stdout = std.fs.File.stdout().writer(&buf);
    const out = &stdout.interface;

    const stack = try allocator.alignedAlloc(u8, .@"16", 64 * 1024);
    defer allocator.free(stack);

    const plain = bestOf(runs, PingPong.run, .{ stack, sw.switch_plain, n, false });
    try report(out, .{ .name = "switch (callee-saved regs, jmp back)", .value = perOp(plain, 2 * n), .unit = "ns/switch", .iterations = 2 * n });
    const fp = bestOf(runs, PingPong.run, .{ stack, sw.switch_fp, n, false });
    try report(out, .{ .name = "switch + FP control state (fp_control)", .value = perOp(fp, 2 * n), .unit = "ns/switch", .iterations = 2 * n });
    if (@import("builtin").cpu.arch == .x86_64) {
        const ret_fn: SwitchFn = @ptrCast(&sw.impl.switchRet);
        const ret = bestOf(runs, PingPong.run, .{ stack, ret_fn, n, true });
        try report(out, .{ .name = "switch returning with ret (not used)", .value = perOp(ret, 2 * n), .unit = "ns/switch", .iterations = 2 * n });
    }

    var reg = kcoro.Registry.init(allocator);
    defer reg.deinit();
    const h = try reg.create(yielder, null, 0, .{});
    const co = try reg.get(h);
    _ = try co.@"resume"();
    const ry = bestOf(runs, resumeYield, .{ co, n });
    try report(out, .{ .name = "coroutine resume + yield round trip", .value = perOp(ry, n), .unit = "ns/round-trip", .iterations = n });
    try reg.destroy(h);

    {
        const count: usize = if (quick) 100_000 else 1_000_000;
        const handles = try allocator.alloc(u32, count);
        defer allocator.free(handles);
        var big = kcoro.Registry.init(std.heap.c_allocator);
        defer big.deinit();
        const per = try liveParked(&big, count, handles);
        try report(out, .{ .name = "live parked coroutines (slab, 16 KiB stacks)", .value = per, .unit = "bytes/coroutine", .iterations = count });
    }

    const cycles = n / 10;
    const crd = bestOf(runs, createRunDestroy, .{ &reg, cycles });
    try report(out, .{ .name = "coroutine create + run + destroy", .value = perOp(crd, cycles), .unit = "ns/coroutine", .iterations = cycles });
}

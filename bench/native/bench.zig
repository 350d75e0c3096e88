//! Native benchmarks of the coroutine core (no FFI).
//! `zig build bench -- [--json] [--quick] [--only SUBSTRING]`: `--only` runs just the figures
//! whose label contains SUBSTRING (e.g. `--only chan:` or `--only ChanSync`).
//! `zig build bench -- --scaling [--max-workers N]`: instead, the scheduler and channel figures
//! that depend on the worker count, at 1, 2, 4, ... workers up to the CPUs this process may use
//! (and that count itself): bench/scaling.ts runs it beside Go's `-cpu` list.
//!
//! Each figure is the best of several runs (the machine is shared and small; the minimum is the
//! least noisy estimate of the cost itself). Printed as a table, or with --json as one JSON
//! object per line: {"name","value","unit","iterations"}.
const std = @import("std");
/// The core; the module is the C ABI's root (zig-src/root.zig), whose exports the actor
/// figures call (`ActorBench`).
const kcoro = @import("kcoro").core;

const sw = kcoro.arch;
const Context = sw.Context;
const SwitchFn = sw.SwitchFn;

const Result = struct { name: []const u8, value: f64, unit: []const u8, iterations: u64 };

var json = false;
/// Workers of the channel benchmarks' scheduler, and coroutines of the figures that Go runs with
/// `RunParallel` (one goroutine per P) or with one producer/consumer pair per P. 2 except under
/// `--scaling`.
var chan_workers: u32 = 2;
/// `--only SUBSTRING`: run just the figures whose label contains it.
var only: ?[]const u8 = null;

fn want(label: []const u8) bool {
    const o = only orelse return true;
    return std.mem.indexOf(u8, label, o) != null;
}

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

// ---------------------------------------------------------------------------------------------
// Scheduler benchmarks (Go peers in bench/go/sched_test.go).

const Scheduler = kcoro.scheduler.Scheduler;
const builtins = kcoro.builtins;

fn startSched(s: *Scheduler, workers: u32, stack_size: usize, mode: kcoro.stack.Mode) !void {
    try s.start(std.heap.c_allocator, .{ .workers = workers, .stack_size = stack_size, .stack_mode = mode });
}

/// Chains of coroutines, each spawning the next and finishing (Go's CreateGoroutines).
fn chain(arg: ?*anyopaque) callconv(.c) void {
    const n = @intFromPtr(arg);
    if (n == 0) return;
    _ = kcoro.scheduler.currentScheduler().?.spawn(chain, @ptrFromInt(n - 1)) catch unreachable;
}

fn benchSpawn(n: u64, workers: u32) !f64 {
    var s: Scheduler = undefined;
    try startSched(&s, workers, 16 * 1024, .slab);
    defer s.shutdown(.cancel);
    var timer = try std.time.Timer.start();
    for (0..workers) |_| _ = try s.spawn(chain, @ptrFromInt(n / workers));
    try s.drain();
    return perOp(timer.read(), n);
}

fn nop(_: ?*anyopaque) callconv(.c) void {}

/// Spawns from a thread outside the workers (a host's kc_spawn): each looks at
/// `lifecycle_pending`, takes and lets go of the scheduler's lifecycle lock
/// (`Scheduler.spawnWith`, `unlockLifecycleSpawn`), then pushes to the inject queue, which the
/// one worker drains meanwhile. Only the spawn calls are timed, in batches of 1,000 with a
/// drain between (so that the stacks in use stay few).
fn benchSpawnOutside(n: u64) !f64 {
    var s: Scheduler = undefined;
    try startSched(&s, 1, 16 * 1024, .slab);
    defer s.shutdown(.cancel);
    const batch = 1000;
    var spent: u64 = 0;
    var done: u64 = 0;
    while (done < n) : (done += batch) {
        var timer = try std.time.Timer.start();
        for (0..batch) |_| _ = try s.spawn(nop, null);
        spent += timer.read();
        try s.drain();
    }
    return perOp(spent, done);
}

fn yielder2(arg: ?*anyopaque) callconv(.c) void {
    const n = @intFromPtr(arg);
    for (0..n) |_| kcoro.coroutine.yield() catch unreachable;
}

/// Two coroutines on one worker yielding to each other: one round trip = two yields.
fn benchYieldPair(n: u64) !f64 {
    var s: Scheduler = undefined;
    try startSched(&s, 1, 16 * 1024, .guarded);
    defer s.shutdown(.cancel);
    var timer = try std.time.Timer.start();
    _ = try s.spawn(yielder2, @ptrFromInt(n));
    _ = try s.spawn(yielder2, @ptrFromInt(n));
    try s.drain();
    return perOp(timer.read(), n);
}

const PingPong2 = struct {
    var sched: *Scheduler = undefined;
    var refs: [2]kcoro.coroutine.Ref = undefined;
    var turn = std.atomic.Value(u8).init(0);
    var rounds: u64 = 0;
    var ready = std.atomic.Value(u8).init(0);

    fn side(arg: ?*anyopaque) callconv(.c) void {
        const me: u8 = @intCast(@intFromPtr(arg));
        const co = kcoro.coroutine.current().?;
        refs[me] = co.ref();
        _ = ready.fetchAdd(1, .acq_rel);
        while (ready.load(.acquire) < 2) kcoro.coroutine.yield() catch unreachable;
        for (0..rounds) |_| {
            while (turn.load(.acquire) != me) kcoro.coroutine.park() catch unreachable;
            turn.store(1 - me, .release);
            _ = sched.unpark(refs[1 - me]);
        }
    }
};

/// Park/unpark ping-pong on one worker (the shape of Go's PingPongHog without channels).
fn benchParkPair(n: u64) !f64 {
    var s: Scheduler = undefined;
    try startSched(&s, 1, 16 * 1024, .guarded);
    defer s.shutdown(.cancel);
    PingPong2.sched = &s;
    PingPong2.rounds = n;
    PingPong2.turn.store(0, .monotonic);
    PingPong2.ready.store(0, .monotonic);
    var timer = try std.time.Timer.start();
    _ = try s.spawn(PingPong2.side, @ptrFromInt(0));
    _ = try s.spawn(PingPong2.side, @ptrFromInt(1));
    try s.drain();
    return perOp(timer.read(), n);
}

/// Skynet over 1,000,000 leaves; returns milliseconds.
fn benchSkynet(workers: u32) !f64 {
    var s: Scheduler = undefined;
    try startSched(&s, workers, 16 * 1024, .slab);
    defer s.shutdown(.cancel);
    var cells = [2]std.atomic.Value(u64){ .init(1_000_000), .init(0) };
    var timer = try std.time.Timer.start();
    _ = try s.spawn(@ptrCast(@alignCast(builtins.entry(.skynet))), &cells);
    try s.drain();
    const ms = @as(f64, @floatFromInt(timer.read())) / 1e6;
    if (cells[1].load(.acquire) != 499999500000) return error.WrongSkynetSum;
    return ms;
}

fn parkForever(_: ?*anyopaque) callconv(.c) void {
    kcoro.coroutine.park() catch unreachable;
}

/// Resident bytes per coroutine for `n` scheduled coroutines parked on 16 KiB slab stacks.
fn benchParked(n: u64) !f64 {
    var s: Scheduler = undefined;
    try startSched(&s, 2, 16 * 1024, .slab);
    defer s.shutdown(.cancel);
    const before = rssBytes();
    for (0..n) |_| _ = try s.spawn(parkForever, null);
    try s.drain();
    const after = rssBytes();
    return @as(f64, @floatFromInt(after - before)) / @as(f64, @floatFromInt(n));
}

/// 64 CPU-bound coroutines of `rounds` hash steps; returns milliseconds.
fn benchFanOut(workers: u32, rounds: u64) !f64 {
    var s: Scheduler = undefined;
    try startSched(&s, workers, 16 * 1024, .guarded);
    defer s.shutdown(.cancel);
    var cells = [2]std.atomic.Value(u64){ .init(rounds), .init(0) };
    var timer = try std.time.Timer.start();
    for (0..64) |_| _ = try s.spawn(@ptrCast(@alignCast(builtins.entry(.spin))), &cells);
    try s.drain();
    return @as(f64, @floatFromInt(timer.read())) / 1e6;
}

fn bestF(runs: usize, comptime f: anytype, args: anytype) !f64 {
    var best: f64 = std.math.inf(f64);
    for (0..runs) |_| best = @min(best, try @call(.auto, f, args));
    return best;
}

// ---------------------------------------------------------------------------------------------
// Channel benchmarks: the shapes of Go's runtime channel benchmarks (bench/go/chan_test.go),
// on 2 workers. ns/op is elapsed time over all operations of all coroutines, as Go's
// RunParallel reports it.

const Channel = kcoro.channel.Channel;

const ChanBench = struct {
    ch: *Channel = undefined,
    ops: u64 = 0,
    cap: u32 = 0,
    left: std.atomic.Value(i64) = .init(0),

    fn send(ch: *Channel, v: u64) void {
        ch.send(std.mem.asBytes(&v), null, false) catch unreachable;
    }
    fn recv(ch: *Channel) u64 {
        var v: u64 = 0;
        ch.receive(std.mem.asBytes(&v), null, false) catch unreachable;
        return v;
    }

    fn nonblocking(arg: ?*anyopaque) callconv(.c) void {
        const b: *ChanBench = @ptrCast(@alignCast(arg.?));
        var v: u64 = 0;
        for (0..b.ops) |_| {
            b.ch.receive(std.mem.asBytes(&v), null, true) catch {};
        }
    }
    fn uncontended(arg: ?*anyopaque) callconv(.c) void {
        const b: *ChanBench = @ptrCast(@alignCast(arg.?));
        const ch = Channel.create(std.heap.c_allocator, .{ .elem_size = 8, .capacity = 100 }) catch unreachable;
        defer ch.destroy();
        for (0..b.ops) |_| {
            for (0..100) |_| send(ch, 0);
            for (0..100) |_| _ = recv(ch);
        }
    }
    fn sync(arg: ?*anyopaque) callconv(.c) void {
        const b: *ChanBench = @ptrCast(@alignCast(arg.?));
        while (true) {
            const i = b.left.fetchSub(1, .monotonic) - 1;
            if (i < 0) break;
            for (0..1000) |_| {
                if (@mod(i, 2) == 0) {
                    _ = recv(b.ch);
                    send(b.ch, 0);
                } else {
                    send(b.ch, 0);
                    _ = recv(b.ch);
                }
            }
        }
    }
    fn producer(arg: ?*anyopaque) callconv(.c) void {
        const b: *ChanBench = @ptrCast(@alignCast(arg.?));
        while (b.left.fetchSub(1, .monotonic) > 0) {
            for (0..1000) |_| send(b.ch, 1);
        }
        send(b.ch, 0);
    }
    fn consumer(arg: ?*anyopaque) callconv(.c) void {
        const b: *ChanBench = @ptrCast(@alignCast(arg.?));
        while (recv(b.ch) != 0) {}
    }
    fn creation(arg: ?*anyopaque) callconv(.c) void {
        const b: *ChanBench = @ptrCast(@alignCast(arg.?));
        for (0..b.ops) |_| {
            const ch = Channel.create(std.heap.c_allocator, .{ .elem_size = 8, .capacity = 1 }) catch unreachable;
            send(ch, 0);
            _ = recv(ch);
            ch.destroy();
        }
    }
    fn selectUncontended(arg: ?*anyopaque) callconv(.c) void {
        const b: *ChanBench = @ptrCast(@alignCast(arg.?));
        const c1 = Channel.create(std.heap.c_allocator, .{ .elem_size = 8, .capacity = 1 }) catch unreachable;
        defer c1.destroy();
        const c2 = Channel.create(std.heap.c_allocator, .{ .elem_size = 8, .capacity = 1 }) catch unreachable;
        defer c2.destroy();
        send(c1, 0);
        var x: u64 = 0;
        const clauses = [_]kcoro.channel.Clause{
            .{ .ch = c1, .kind = .receive, .elem = std.mem.asBytes(&x) },
            .{ .ch = c2, .kind = .receive, .elem = std.mem.asBytes(&x) },
        };
        for (0..b.ops) |_| {
            const got = kcoro.channel.select(&clauses, .{}) catch unreachable;
            if (got.index == 0) send(c2, 0) else send(c1, 0);
        }
    }
    var popular_c: *Channel = undefined;
    var popular_d: [1000]*Channel = undefined;
    fn popularSelector(arg: ?*anyopaque) callconv(.c) void {
        const b: *ChanBench = @ptrCast(@alignCast(arg.?));
        const id = b.left.fetchAdd(1, .monotonic);
        const d = popular_d[@intCast(id)];
        var x: u64 = 0;
        const clauses = [_]kcoro.channel.Clause{
            .{ .ch = popular_c, .kind = .receive, .elem = std.mem.asBytes(&x) },
            .{ .ch = d, .kind = .receive, .elem = std.mem.asBytes(&x) },
        };
        for (0..b.ops) |_| _ = kcoro.channel.select(&clauses, .{}) catch unreachable;
    }
    fn popularDriver(arg: ?*anyopaque) callconv(.c) void {
        const b: *ChanBench = @ptrCast(@alignCast(arg.?));
        for (0..b.ops) |_| {
            for (popular_d) |d| send(d, 1);
        }
    }
    fn sem(arg: ?*anyopaque) callconv(.c) void {
        const b: *ChanBench = @ptrCast(@alignCast(arg.?));
        for (0..b.ops) |_| {
            send(b.ch, 0);
            _ = recv(b.ch);
        }
    }
};

/// Runs `entries` (one coroutine each) on a scheduler of `workers` workers; returns elapsed ns.
fn runChanBench(b: *ChanBench, entries: []const kcoro.coroutine.EntryFn) !u64 {
    var s: Scheduler = undefined;
    try startSched(&s, chan_workers, 32 * 1024, .guarded);
    defer s.shutdown(.cancel);
    var timer = try std.time.Timer.start();
    for (entries) |e| _ = try s.spawn(e, b);
    try s.drain();
    return timer.read();
}

// ---------------------------------------------------------------------------------------------
// What the counters cost: the ChanUncontended shape on one thread, counters on and off.

/// The two sides as functions of their own, so that an instruction counter can tell them apart
/// (`valgrind --tool=callgrind --toggle-collect=...countersOn`).
noinline fn countersOn(rounds: u64) !f64 {
    return countersRun(true, rounds);
}

noinline fn countersOff(rounds: u64) !f64 {
    return countersRun(false, rounds);
}

fn countersRun(metrics: bool, rounds: u64) !f64 {
    const ch = try Channel.create(std.heap.c_allocator, .{ .elem_size = 8, .capacity = 100, .metrics = metrics });
    defer ch.destroy();
    var timer = try std.time.Timer.start();
    for (0..rounds) |_| {
        for (0..100) |i| {
            var v: u64 = i;
            ch.send(std.mem.asBytes(&v), null, false) catch unreachable;
        }
        for (0..100) |_| {
            var v: u64 = 0;
            ch.receive(std.mem.asBytes(&v), null, false) catch unreachable;
            std.mem.doNotOptimizeAway(v);
        }
    }
    return @as(f64, @floatFromInt(timer.read())) / @as(f64, @floatFromInt(rounds * 200));
}

// ---------------------------------------------------------------------------------------------
// Zero-copy throughput: a producer and a consumer coroutine (2 workers) move 1 MiB buffers.
// Zero-copy: descriptors of a pool of buffers circulate (full -> consumer, empty -> producer
// through a second channel); copying: 1 MiB elements copied in and out. Both sides write and
// read the first word of every buffer.

const mib = 1 << 20;

const ZeroCopyBench = struct {
    full: *Channel = undefined,
    empty: *Channel = undefined,
    count: u64 = 0,
    zero_copy: bool = true,
    sum: u64 = 0,

    fn producer(arg: ?*anyopaque) callconv(.c) void {
        const b: *ZeroCopyBench = @ptrCast(@alignCast(arg.?));
        if (b.zero_copy) {
            for (0..b.count) |i| {
                var d: kcoro.channel.Descriptor = undefined;
                b.empty.receive(std.mem.asBytes(&d), null, false) catch unreachable;
                const words: [*]u64 = @ptrCast(@alignCast(d.ptr.?));
                words[0] = i;
                b.full.send(std.mem.asBytes(&d), null, false) catch unreachable;
            }
        } else {
            const buf = std.heap.c_allocator.alignedAlloc(u8, .@"8", mib) catch unreachable;
            defer std.heap.c_allocator.free(buf);
            @memset(buf, 1);
            for (0..b.count) |i| {
                std.mem.bytesAsSlice(u64, buf)[0] = i;
                b.full.send(buf.ptr, null, false) catch unreachable;
            }
        }
    }

    fn consumer(arg: ?*anyopaque) callconv(.c) void {
        const b: *ZeroCopyBench = @ptrCast(@alignCast(arg.?));
        if (b.zero_copy) {
            for (0..b.count) |_| {
                var d: kcoro.channel.Descriptor = undefined;
                b.full.receive(std.mem.asBytes(&d), null, false) catch unreachable;
                const words: [*]u64 = @ptrCast(@alignCast(d.ptr.?));
                b.sum +%= words[0];
                b.empty.send(std.mem.asBytes(&d), null, false) catch unreachable;
            }
        } else {
            const buf = std.heap.c_allocator.alignedAlloc(u8, .@"8", mib) catch unreachable;
            defer std.heap.c_allocator.free(buf);
            for (0..b.count) |_| {
                b.full.receive(buf.ptr, null, false) catch unreachable;
                b.sum +%= std.mem.bytesAsSlice(u64, buf)[0];
            }
        }
    }
};

/// Bytes per second through one channel.
fn zeroCopyRun(zero_copy: bool, count: u64) !f64 {
    const pool = 16;
    var b: ZeroCopyBench = .{ .count = count, .zero_copy = zero_copy };
    if (zero_copy) {
        b.full = try Channel.create(std.heap.c_allocator, .{ .capacity = pool, .zero_copy = true });
        b.empty = try Channel.create(std.heap.c_allocator, .{ .capacity = pool, .zero_copy = true });
    } else {
        b.full = try Channel.create(std.heap.c_allocator, .{ .elem_size = mib, .capacity = pool });
        b.empty = try Channel.create(std.heap.c_allocator, .{ .elem_size = 8 });
    }
    defer b.full.destroy();
    defer b.empty.destroy();
    var bufs: [pool][]u8 = undefined;
    if (zero_copy) {
        for (&bufs) |*buf| {
            buf.* = try std.heap.c_allocator.alignedAlloc(u8, .@"8", mib);
            @memset(buf.*, 1);
            var d: kcoro.channel.Descriptor = .{ .ptr = buf.*.ptr, .len = mib };
            try b.empty.send(std.mem.asBytes(&d), null, true);
        }
    }
    defer if (zero_copy) for (bufs) |buf| std.heap.c_allocator.free(buf);
    var s: kcoro.scheduler.Scheduler = undefined;
    try s.start(std.heap.c_allocator, .{ .workers = 2 });
    defer s.shutdown(.finish);
    var timer = try std.time.Timer.start();
    _ = try s.spawn(ZeroCopyBench.consumer, &b);
    _ = try s.spawn(ZeroCopyBench.producer, &b);
    try s.drain();
    const ns = timer.read();
    std.debug.assert(b.sum == count * (count - 1) / 2);
    return @as(f64, @floatFromInt(count * mib)) / (@as(f64, @floatFromInt(ns)) / std.time.ns_per_s);
}

/// The native floor of the TypeScript Worker stream (bench/worker_bench.ts): one thread sends
/// 8-byte values with try-sends, another receives them with try-receives, each retrying at once
/// when the buffer is full or empty. Nanoseconds per value.
fn tryStream(capacity: u32, count: u64) !f64 {
    const ch = try Channel.create(std.heap.c_allocator, .{ .elem_size = 8, .capacity = capacity });
    defer ch.destroy();
    const Receiver = struct {
        fn run(c: *Channel, n: u64) void {
            var got: u64 = 0;
            while (got < n) {
                var v: u64 = 0;
                c.receive(std.mem.asBytes(&v), null, true) catch continue;
                std.debug.assert(v == got); // FIFO, nothing lost
                got += 1;
            }
        }
    };
    var timer = try std.time.Timer.start();
    const t = try std.Thread.spawn(.{}, Receiver.run, .{ ch, count });
    var i: u64 = 0;
    while (i < count) {
        var v: u64 = i;
        ch.send(std.mem.asBytes(&v), null, true) catch continue;
        i += 1;
    }
    t.join();
    return perOp(timer.read(), count);
}

/// The native floor of the TypeScript 1 KiB Worker stream (bench/worker_bench.ts, the parts
/// in bench/stream_parts.ts): one thread copies `payload`-byte values into the buffer pool
/// (as kc_desc_make does; 0: inline descriptors, no buffer) and try-sends their descriptors
/// through a zero-copy channel of capacity 1024; another try-receives them, each waiting in a
/// blocking send or receive when its try finds the buffer full or empty (as the JavaScript
/// loops await; bench/native/stream_parts.zig says why not retry at once). The receiver
/// frees each value's slice at once (`lag` 0) or, as a receiving isolate does when its
/// collector frees a chunk's views, counts them per chunk and releases a chunk's count `lag`
/// chunks later (`.sliding`: the pool then cycles through about `lag` chunks of 128 KiB, memory
/// no longer in cache), or as one collection does: all the chunks held but the last, together,
/// once it holds `lag`, oldest first (`.oldest`) or newest first (`.newest`, the order V8 runs
/// a FinalizationRegistry's callbacks in). Nanoseconds per value.
const Release = enum { sliding, oldest, newest };

fn descStream(payload: u32, lag: u32, release: Release, count: u64) !f64 {
    const pool = kcoro.buffer_pool.global() orelse return error.OutOfMemory;
    const ch = try Channel.create(std.heap.c_allocator, .{ .capacity = 1024, .zero_copy = true });
    defer ch.destroy();
    const Receiver = struct {
        const max_lag = 1024;
        fn run(c: *Channel, p: *kcoro.buffer_pool.Pool, n: u64, lag_chunks: u32, how: Release) void {
            // Chunks not yet released, oldest first, with their counts.
            var held: [max_lag + 1]struct { chunk: u32, n: u32 } = undefined;
            var first: usize = 0;
            var len: usize = 0;
            var got: u64 = 0;
            while (got < n) : (got += 1) {
                var d: kcoro.channel.Descriptor = undefined;
                c.receive(std.mem.asBytes(&d), null, true) catch
                    c.receive(std.mem.asBytes(&d), null, false) catch unreachable; // empty: wait
                const ptr = d.ptr orelse continue;
                if (lag_chunks == 0) {
                    std.debug.assert(p.free(ptr));
                    continue;
                }
                const chunk = p.chunkOf(ptr).?;
                if (len > 0 and held[(first + len - 1) % held.len].chunk == chunk) {
                    held[(first + len - 1) % held.len].n += 1;
                    continue;
                }
                held[(first + len) % held.len] = .{ .chunk = chunk, .n = 1 };
                len += 1;
                if (how != .sliding and len > lag_chunks) {
                    // All but the newest (the chunk being received from), in one go.
                    for (0..len - 1) |k| {
                        const at = if (how == .oldest) first + k else first + len - 2 - k;
                        p.release(held[at % held.len].chunk, held[at % held.len].n);
                    }
                    first = (first + len - 1) % held.len;
                    len = 1;
                } else if (len > lag_chunks) {
                    p.release(held[first].chunk, held[first].n);
                    first = (first + 1) % held.len;
                    len -= 1;
                }
            }
            while (len > 0) : (len -= 1) {
                p.release(held[first].chunk, held[first].n);
                first = (first + 1) % held.len;
            }
        }
    };
    std.debug.assert(lag <= Receiver.max_lag);
    var src: [16 * 1024]u8 = undefined;
    @memset(&src, 7);
    var timer = try std.time.Timer.start();
    const t = try std.Thread.spawn(.{}, Receiver.run, .{ ch, pool, count, lag, release });
    var i: u64 = 0;
    while (i < count) : (i += 1) {
        var d: kcoro.channel.Descriptor = .{ .ptr = null, .len = payload };
        if (payload > 0) {
            const dst = pool.alloc(payload) orelse return error.OutOfMemory;
            @memcpy(dst[0..payload], src[0..payload]);
            d.ptr = dst;
        }
        ch.send(std.mem.asBytes(&d), null, true) catch |e| switch (e) {
            error.WouldBlock => try ch.send(std.mem.asBytes(&d), null, false), // full: wait
            else => return e,
        };
    }
    t.join();
    return perOp(timer.read(), count);
}

/// Up to this many workers under `--scaling`.
const max_scaling_workers = 256;
var entry_buf: [2 * max_scaling_workers]kcoro.coroutine.EntryFn = undefined;

/// `group` once per worker: one coroutine per worker (Go's `RunParallel`, one goroutine per P),
/// or a producer and a consumer per worker (Go's ProdCons, one pair per P).
fn perWorker(group: []const kcoro.coroutine.EntryFn) []const kcoro.coroutine.EntryFn {
    std.debug.assert(chan_workers >= 1 and chan_workers <= max_scaling_workers and group.len <= 2);
    for (0..chan_workers) |w| @memcpy(entry_buf[w * group.len ..][0..group.len], group);
    return entry_buf[0 .. chan_workers * group.len];
}

fn benchChan(name: []const u8, total: u64) !f64 {
    var b: ChanBench = .{};
    const E = ChanBench;
    if (std.mem.eql(u8, name, "nonblocking")) {
        b.ch = try Channel.create(std.heap.c_allocator, .{ .elem_size = 8 });
        defer b.ch.destroy();
        b.ops = total / chan_workers;
        return perOp(try runChanBench(&b, perWorker(&.{E.nonblocking})), total);
    } else if (std.mem.eql(u8, name, "uncontended")) {
        b.ops = total / chan_workers;
        return perOp(try runChanBench(&b, perWorker(&.{E.uncontended})), total);
    } else if (std.mem.eql(u8, name, "sync")) {
        b.ch = try Channel.create(std.heap.c_allocator, .{ .elem_size = 8 });
        defer b.ch.destroy();
        b.left.store(@intCast(total / 1000), .monotonic);
        // Two at any worker count (bench/go/chan_test.go says why).
        return perOp(try runChanBench(&b, &.{ E.sync, E.sync }), total);
    } else if (std.mem.startsWith(u8, name, "prodcons")) {
        const cap = try std.fmt.parseInt(u32, name["prodcons".len..], 10);
        b.ch = try Channel.create(std.heap.c_allocator, .{ .elem_size = 8, .capacity = cap });
        defer b.ch.destroy();
        b.left.store(@intCast(total / 1000), .monotonic);
        return perOp(try runChanBench(&b, perWorker(&.{ E.producer, E.consumer })), total);
    } else if (std.mem.eql(u8, name, "creation")) {
        b.ops = total / chan_workers;
        return perOp(try runChanBench(&b, perWorker(&.{E.creation})), total);
    } else if (std.mem.eql(u8, name, "select")) {
        b.ops = total / chan_workers;
        return perOp(try runChanBench(&b, perWorker(&.{E.selectUncontended})), total);
    } else if (std.mem.eql(u8, name, "popular")) {
        E.popular_c = try Channel.create(std.heap.c_allocator, .{ .elem_size = 8 });
        defer E.popular_c.destroy();
        for (&E.popular_d) |*d| d.* = try Channel.create(std.heap.c_allocator, .{ .elem_size = 8 });
        defer for (E.popular_d) |d| d.destroy();
        b.ops = total;
        b.left.store(0, .monotonic);
        var entries: [1001]kcoro.coroutine.EntryFn = undefined;
        for (entries[0..1000]) |*e| e.* = E.popularSelector;
        entries[1000] = E.popularDriver;
        return perOp(try runChanBench(&b, &entries), total);
    } else if (std.mem.eql(u8, name, "sem")) {
        b.ch = try Channel.create(std.heap.c_allocator, .{ .elem_size = 8, .capacity = 2 });
        defer b.ch.destroy();
        b.ops = total / chan_workers;
        return perOp(try runChanBench(&b, perWorker(&.{E.sem})), total);
    }
    unreachable; // names are ours
}

// ---------------------------------------------------------------------------------------------
// Native actors (the C ABI's kc_actor_spawn, linked in with the module): the cost of a message,
// its handler feeding the actor's own conflated mailbox so that no receive waits (the actor's
// loop is what is measured, with a try-send), with and without a context deadline, which the
// actor looks at between messages.

extern fn kc_sched_start(workers: u32, stack_size: u32, flags: u32) callconv(.c) i32;
extern fn kc_sched_shutdown(mode: u32) callconv(.c) i32;
extern fn kc_now_ns() callconv(.c) u64;
extern fn kc_chan_create(elem_size: u32, capacity: u32, overflow: u32, flags: u32, out_handle: ?*u32) callconv(.c) i32;
extern fn kc_chan_try_send(h: u32, elem: ?*const anyopaque, size: u32) callconv(.c) i32;
extern fn kc_chan_close(h: u32) callconv(.c) i32;
extern fn kc_chan_destroy(h: u32) callconv(.c) i32;
extern fn kc_scope_create(parent: u32, out_scope: ?*u32) callconv(.c) i32;
extern fn kc_scope_set_deadline(scope: u32, deadline_ns: u64) callconv(.c) i32;
extern fn kc_scope_wait(scope: u32, deadline_ns: u64) callconv(.c) i32;
extern fn kc_scope_destroy(scope: u32) callconv(.c) i32;
extern fn kc_actor_spawn(scope: u32, mailbox: u32, handler: *const fn (?*anyopaque, [*]const u8) callconv(.c) void, ctx: ?*anyopaque, on_done: ?*const fn (?*anyopaque, i32) callconv(.c) void, out_handle: ?*u32) callconv(.c) i32;

const ActorBench = struct {
    var box: u32 = 0;
    var left: u64 = 0;
    const conflated: u32 = 1 << 0; // kc_chan_create's KC_CHAN_CONFLATED

    fn handler(_: ?*anyopaque, _: [*]const u8) callconv(.c) void {
        left -= 1;
        const v: u64 = 1;
        // The last one closes the (then empty) mailbox instead: the actor ends with 0.
        _ = if (left == 0) kc_chan_close(box) else kc_chan_try_send(box, &v, 8);
    }

    /// ns per message of `n`, one worker; `deadline`: an hour away, so never reached.
    fn run(n: u64, deadline: bool) !f64 {
        if (kc_sched_start(1, 0, 0) != 0) return error.SchedStart;
        defer _ = kc_sched_shutdown(0);
        var scope: u32 = 0;
        if (kc_scope_create(0, &scope) != 0) return error.Scope;
        defer _ = kc_scope_destroy(scope);
        if (deadline and kc_scope_set_deadline(scope, kc_now_ns() + 3600 * std.time.ns_per_s) != 0) return error.Deadline;
        if (kc_chan_create(8, 1, 0, conflated, &box) != 0) return error.Chan;
        defer _ = kc_chan_destroy(box);
        const v: u64 = 1;
        if (kc_chan_try_send(box, &v, 8) != 0) return error.Send;
        left = n;
        var timer = try std.time.Timer.start();
        if (kc_actor_spawn(scope, box, handler, null, null, null) != 0) return error.Spawn;
        if (kc_scope_wait(scope, 0) != 0) return error.Wait;
        const ns = timer.read();
        if (left != 0) return error.Unfinished;
        return perOp(ns, n);
    }
};

fn actorBenches(out: *std.Io.Writer, quick: bool) !void {
    const plain = "actor: message (self-fed conflated mailbox, 1 worker)";
    const timed = "actor: message with a context deadline (self-fed, 1 worker)";
    if (!want(plain) and !want(timed)) return;
    const n: u64 = if (quick) 1_000_000 else 5_000_000;
    const runs: usize = if (quick) 3 else 7;
    // Alternated, so that drift on a shared machine hits both alike.
    var without: f64 = std.math.inf(f64);
    var with: f64 = std.math.inf(f64);
    for (0..runs) |_| {
        without = @min(without, try ActorBench.run(n, false));
        with = @min(with, try ActorBench.run(n, true));
    }
    if (want(plain)) try report(out, .{ .name = plain, .value = without, .unit = "ns/message", .iterations = n });
    if (want(timed)) try report(out, .{ .name = timed, .value = with, .unit = "ns/message", .iterations = n });
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
    var scaling = false;
    var max_workers: ?u32 = null;
    for (args[1..], 1..) |a, i| {
        if (std.mem.eql(u8, a, "--json")) json = true;
        if (std.mem.eql(u8, a, "--quick")) quick = true;
        if (std.mem.eql(u8, a, "--scaling")) scaling = true;
        if (std.mem.eql(u8, a, "--only") and i + 1 < args.len) only = args[i + 1];
        if (std.mem.eql(u8, a, "--max-workers") and i + 1 < args.len) {
            max_workers = std.fmt.parseInt(u32, args[i + 1], 10) catch return error.InvalidArgument;
        }
    }

    const n: u64 = if (quick) 1_000_000 else 10_000_000;
    const runs: usize = if (quick) 3 else 7;

    var buf: [4096]u8 = undefined;
    var stdout = std.fs.File.stdout().writerStreaming(&buf);
    const out = &stdout.interface;

    if (scaling) return scalingBenches(out, quick, max_workers);

    const stack = try allocator.alignedAlloc(u8, .@"16", 64 * 1024);
    defer allocator.free(stack);
    try coreBenches(allocator, out, stack, n, runs, quick);
    try schedBenches(out, quick);
    try chanBenches(out, quick);
    try actorBenches(out, quick);
}

fn coreBenches(allocator: std.mem.Allocator, out: *std.Io.Writer, stack: []align(16) u8, n: u64, runs: usize, quick: bool) !void {
    const plain_label = "switch (callee-saved regs, jmp back)";
    if (want(plain_label)) {
        const plain = bestOf(runs, PingPong.run, .{ stack, sw.switch_plain, n, false });
        try report(out, .{ .name = plain_label, .value = perOp(plain, 2 * n), .unit = "ns/switch", .iterations = 2 * n });
    }
    const fp_label = "switch + FP control state (fp_control)";
    if (want(fp_label)) {
        const fp = bestOf(runs, PingPong.run, .{ stack, sw.switch_fp, n, false });
        try report(out, .{ .name = fp_label, .value = perOp(fp, 2 * n), .unit = "ns/switch", .iterations = 2 * n });
    }
    const ret_label = "switch returning with ret (not used)";
    if (@import("builtin").cpu.arch == .x86_64 and want(ret_label)) {
        const ret_fn: SwitchFn = @ptrCast(&sw.impl.switchRet);
        const ret = bestOf(runs, PingPong.run, .{ stack, ret_fn, n, true });
        try report(out, .{ .name = ret_label, .value = perOp(ret, 2 * n), .unit = "ns/switch", .iterations = 2 * n });
    }

    var reg = kcoro.Registry.init(allocator);
    defer reg.deinit();
    const ry_label = "coroutine resume + yield round trip";
    if (want(ry_label)) {
        const h = try reg.create(yielder, null, 0, .{});
        const co = try reg.get(h);
        _ = try co.@"resume"();
        const ry = bestOf(runs, resumeYield, .{ co, n });
        try report(out, .{ .name = ry_label, .value = perOp(ry, n), .unit = "ns/round-trip", .iterations = n });
        try reg.destroy(h);
    }

    const parked_label = "live parked coroutines (slab, 16 KiB stacks)";
    if (want(parked_label)) {
        const count: usize = if (quick) 100_000 else 1_000_000;
        const handles = try allocator.alloc(u32, count);
        defer allocator.free(handles);
        var big = kcoro.Registry.init(std.heap.c_allocator);
        defer big.deinit();
        const per = try liveParked(&big, count, handles);
        try report(out, .{ .name = parked_label, .value = per, .unit = "bytes/coroutine", .iterations = count });
    }

    const crd_label = "coroutine create + run + destroy";
    if (want(crd_label)) {
        const cycles = n / 10;
        const crd = bestOf(runs, createRunDestroy, .{ &reg, cycles });
        try report(out, .{ .name = crd_label, .value = perOp(crd, cycles), .unit = "ns/coroutine", .iterations = cycles });
    }
}

/// CPUs this process may run on (its affinity mask), at least 1.
fn usableCpus() u32 {
    const set = std.posix.sched_getaffinity(0) catch return @intCast(std.Thread.getCpuCount() catch 1);
    var n: u32 = 0;
    for (set) |word| n += @popCount(word);
    return @max(n, 1);
}

/// The figures that depend on the worker count, at 1, 2, 4, ... workers up to the usable CPUs
/// (or `--max-workers`), and that count itself. Labels end in "(N workers)"; bench/scaling.ts
/// pairs each with Go's run of the same shape at `-cpu N`.
fn scalingBenches(out: *std.Io.Writer, quick: bool, max_workers: ?u32) !void {
    const top = @min(max_workers orelse usableCpus(), max_scaling_workers);
    const runs: usize = if (quick) 2 else 3;
    const sn: u64 = if (quick) 200_000 else 1_000_000;
    const rounds: u64 = 2_000_000; // as in bench/go (BenchmarkFanOut)
    var w: u32 = 1;
    while (true) {
        chan_workers = w;
        var label_buf: [128]u8 = undefined;
        const Case = struct { prefix: []const u8, unit: []const u8, iterations: u64 };
        const cases = [_]Case{
            .{ .prefix = "scaling: spawn + run to completion", .unit = "ns/spawn", .iterations = sn },
            .{ .prefix = "scaling: skynet, 1,000,000 coroutines", .unit = "ms", .iterations = 1_000_000 },
            .{ .prefix = "scaling: CPU fan-out, 64 tasks", .unit = "ms", .iterations = 64 },
            .{ .prefix = "scaling: ChanUncontended", .unit = "ns/op", .iterations = 100_000 },
            .{ .prefix = "scaling: ChanSync", .unit = "ns/op", .iterations = 1_000_000 },
            .{ .prefix = "scaling: ChanProdCons100", .unit = "ns/op", .iterations = 2_000_000 },
            .{ .prefix = "scaling: ChanSem", .unit = "ns/op", .iterations = 4_000_000 },
        };
        for (cases, 0..) |c, i| {
            const label = try std.fmt.bufPrint(&label_buf, "{s} ({d} worker{s})", .{ c.prefix, w, if (w == 1) "" else "s" });
            if (!want(label)) continue;
            const value = switch (i) {
                0 => try bestF(runs, benchSpawn, .{ sn, w }),
                1 => try bestF(runs, benchSkynet, .{w}),
                2 => try bestF(runs, benchFanOut, .{ w, rounds }),
                3 => try bestF(runs, benchChan, .{ "uncontended", c.iterations }),
                4 => try bestF(runs, benchChan, .{ "sync", c.iterations }),
                5 => try bestF(runs, benchChan, .{ "prodcons100", c.iterations }),
                6 => try bestF(runs, benchChan, .{ "sem", c.iterations }),
                else => unreachable,
            };
            try report(out, .{ .name = label, .value = value, .unit = c.unit, .iterations = c.iterations });
        }
        if (w == top) break;
        w = @min(w * 2, top);
    }
}

fn schedBenches(out: *std.Io.Writer, quick: bool) !void {
    const sn: u64 = if (quick) 200_000 else 1_000_000;
    const sruns: usize = if (quick) 2 else 5;
    const spawn_label = "sched: spawn + run to completion (2 workers)";
    if (want(spawn_label)) try report(out, .{ .name = spawn_label, .value = try bestF(sruns, benchSpawn, .{ sn, 2 }), .unit = "ns/spawn", .iterations = sn });
    const outside_label = "sched: spawn from a thread outside the workers (1 worker)";
    if (want(outside_label)) try report(out, .{ .name = outside_label, .value = try bestF(sruns, benchSpawnOutside, .{sn}), .unit = "ns/spawn", .iterations = sn });
    const yield_label = "sched: yield round trip, two coroutines on one worker";
    if (want(yield_label)) try report(out, .{ .name = yield_label, .value = try bestF(sruns, benchYieldPair, .{sn}), .unit = "ns/round-trip", .iterations = sn });
    const park_label = "sched: park/unpark ping-pong on one worker";
    if (want(park_label)) try report(out, .{ .name = park_label, .value = try bestF(sruns, benchParkPair, .{sn}), .unit = "ns/round-trip", .iterations = sn });
    const skynet_label = "sched: skynet, 1,000,000 coroutines (2 workers)";
    if (want(skynet_label)) try report(out, .{ .name = skynet_label, .value = try bestF(sruns, benchSkynet, .{2}), .unit = "ms", .iterations = 1_000_000 });
    const pn: u64 = if (quick) 100_000 else 1_000_000;
    const parked_label = "sched: parked coroutines, resident memory";
    if (want(parked_label)) try report(out, .{ .name = parked_label, .value = try benchParked(pn), .unit = "bytes/coroutine", .iterations = pn });
    if (want("sched: CPU fan-out")) {
        const rounds: u64 = 2_000_000; // as in bench/go (BenchmarkFanOut)
        const one = try bestF(sruns, benchFanOut, .{ 1, rounds });
        const two = try bestF(sruns, benchFanOut, .{ 2, rounds });
        try report(out, .{ .name = "sched: CPU fan-out, 64 tasks, 1 worker", .value = one, .unit = "ms", .iterations = 64 });
        try report(out, .{ .name = "sched: CPU fan-out, 64 tasks, 2 workers", .value = two, .unit = "ms", .iterations = 64 });
        try report(out, .{ .name = "sched: parallel speedup, 2 workers over 1", .value = one / two, .unit = "x", .iterations = 64 });
    }
}

/// How long one cache line takes to go from one CPU to the other and back: two threads pinned
/// to the first two CPUs of the process's mask take turns writing one word. On these VMs it is
/// anywhere from ~45 to ~370 ns depending on where the host puts the two vCPUs, and it moves
/// between runs; every contended figure (ProdCons, Sem, Popular; Go's too) follows it.
const CoreProbe = struct {
    var word: std.atomic.Value(u64) align(64) = .init(0);
    const rounds: u64 = 1_000_000;

    fn pin(cpu: usize) void {
        var set: std.os.linux.cpu_set_t = @splat(0);
        set[cpu / @bitSizeOf(usize)] |= @as(usize, 1) << @intCast(cpu % @bitSizeOf(usize));
        std.os.linux.sched_setaffinity(0, &set) catch {};
    }

    fn partner(cpu: usize) void {
        pin(cpu);
        for (0..rounds) |i| {
            while (word.load(.acquire) != 2 * i + 1) std.atomic.spinLoopHint();
            word.store(2 * i + 2, .release);
        }
    }

    /// ns per round trip, or null when the process may use fewer than two CPUs.
    fn run() !?f64 {
        const saved = std.posix.sched_getaffinity(0) catch return null;
        var cpus: [2]usize = undefined;
        var found: usize = 0;
        for (0..@bitSizeOf(std.os.linux.cpu_set_t)) |c| {
            if (found == 2) break;
            if (saved[c / @bitSizeOf(usize)] & (@as(usize, 1) << @intCast(c % @bitSizeOf(usize))) != 0) {
                cpus[found] = c;
                found += 1;
            }
        }
        if (found < 2) return null;
        defer std.os.linux.sched_setaffinity(0, &saved) catch {}; // threads started later inherit it
        pin(cpus[0]);
        word.store(0, .monotonic);
        const t = try std.Thread.spawn(.{}, partner, .{cpus[1]});
        var timer = try std.time.Timer.start();
        for (0..rounds) |i| {
            word.store(2 * i + 1, .release);
            while (word.load(.acquire) != 2 * i + 2) std.atomic.spinLoopHint();
        }
        const ns = timer.read();
        t.join();
        return perOp(ns, rounds);
    }
};

fn reportProbe(out: *std.Io.Writer, label: []const u8) !void {
    const ns = try CoreProbe.run() orelse return;
    try report(out, .{ .name = label, .value = ns, .unit = "ns/round-trip", .iterations = CoreProbe.rounds });
}

fn chanBenches(out: *std.Io.Writer, quick: bool) !void {
    const cruns: usize = if (quick) 2 else 5;
    const probe_before = "chan: core-to-core round trip, machine probe before the figures";
    if (want(probe_before)) try reportProbe(out, probe_before);
    const cases = [_]struct { name: []const u8, label: []const u8, total: u64 }{
        .{ .name = "nonblocking", .label = "chan: ChanNonblocking (try-receive, empty)", .total = 20_000_000 },
        .{ .name = "uncontended", .label = "chan: ChanUncontended (100 sends + 100 receives)", .total = 100_000 },
        .{ .name = "sync", .label = "chan: ChanSync (rendezvous, 2 coroutines)", .total = 1_000_000 },
        .{ .name = "prodcons0", .label = "chan: ChanProdCons0", .total = 1_000_000 },
        .{ .name = "prodcons10", .label = "chan: ChanProdCons10", .total = 2_000_000 },
        .{ .name = "prodcons100", .label = "chan: ChanProdCons100", .total = 2_000_000 },
        .{ .name = "creation", .label = "chan: ChanCreation", .total = 2_000_000 },
        .{ .name = "sem", .label = "chan: ChanSem", .total = 4_000_000 },
        .{ .name = "select", .label = "chan: SelectUncontended", .total = 4_000_000 },
        // 2,000 rounds: spawning the 1,001 coroutines (guarded stacks, from outside) takes
        // 5-9 ms, a third of 200 rounds. Go's b.N at -benchtime 1s is ~5,000 here.
        .{ .name = "popular", .label = "chan: ChanPopular (1000 selects on one channel)", .total = 2000 },
    };
    for (cases) |c| {
        if (!want(c.label)) continue;
        const total = if (quick) c.total / 4 else c.total;
        try report(out, .{ .name = c.label, .value = try bestF(cruns, benchChan, .{ c.name, total }), .unit = "ns/op", .iterations = total });
    }
    if (want("chan: send or receive, counters")) {
        const kruns: usize = if (quick) 3 else 9;
        const rounds: u64 = if (quick) 20_000 else 100_000;
        // Interleave on and off so that drift on a shared machine hits both alike.
        var on: f64 = std.math.inf(f64);
        var off: f64 = std.math.inf(f64);
        for (0..kruns) |_| {
            on = @min(on, try countersOn(rounds));
            off = @min(off, try countersOff(rounds));
        }
        try report(out, .{ .name = "chan: send or receive, counters on (1 thread, capacity 100)", .value = on, .unit = "ns/op", .iterations = rounds * 200 });
        try report(out, .{ .name = "chan: send or receive, counters off (1 thread, capacity 100)", .value = off, .unit = "ns/op", .iterations = rounds * 200 });
    }
    if (want("chan: zero-copy throughput") or want("chan: copying throughput")) {
        const count: u64 = if (quick) 1_000 else 4_000;
        var zc: f64 = 0;
        var cp: f64 = 0;
        for (0..cruns / 2 + 1) |_| {
            zc = @max(zc, try zeroCopyRun(true, count));
            cp = @max(cp, try zeroCopyRun(false, count));
        }
        try report(out, .{ .name = "chan: zero-copy throughput, 1 MiB buffers (2 workers)", .value = zc / 1e9, .unit = "GB/s", .iterations = count });
        try report(out, .{ .name = "chan: copying throughput, 1 MiB elements (2 workers)", .value = cp / 1e9, .unit = "GB/s", .iterations = count });
    }
    const stream_label = "chan: try-operation stream between two threads (f64-sized, capacity 4096)";
    if (want(stream_label)) {
        const count: u64 = if (quick) 1_000_000 else 4_000_000;
        var best: f64 = std.math.inf(f64);
        for (0..cruns) |_| best = @min(best, try tryStream(4096, count));
        try report(out, .{ .name = stream_label, .value = best, .unit = "ns/value", .iterations = count });
    }
    const desc_cases = [_]struct { label: []const u8, payload: u32, lag: u32, release: Release = .sliding }{
        .{ .label = "chan: descriptor stream between two threads (no buffer, capacity 1024)", .payload = 0, .lag = 0 },
        .{ .label = "chan: descriptor stream, 16-byte pooled values freed at once", .payload = 16, .lag = 0 },
        .{ .label = "chan: descriptor stream, 1 KiB pooled values freed at once", .payload = 1024, .lag = 0 },
        .{ .label = "chan: descriptor stream, 1 KiB pooled values freed 80 chunks later (10 MiB)", .payload = 1024, .lag = 80 },
        .{ .label = "chan: descriptor stream, 1 KiB pooled values freed 256 chunks later (32 MiB)", .payload = 1024, .lag = 256 },
        .{ .label = "chan: descriptor stream, 1 KiB pooled values freed 480 chunks later (60 MiB)", .payload = 1024, .lag = 480 },
        .{ .label = "chan: descriptor stream, 1 KiB pooled values freed by 256 chunks, oldest first", .payload = 1024, .lag = 256, .release = .oldest },
        .{ .label = "chan: descriptor stream, 1 KiB pooled values freed by 256 chunks, newest first", .payload = 1024, .lag = 256, .release = .newest },
    };
    for (desc_cases) |c| {
        if (!want(c.label)) continue;
        const count: u64 = if (quick) 200_000 else 1_000_000;
        var best: f64 = std.math.inf(f64);
        for (0..cruns) |_| best = @min(best, try descStream(c.payload, c.lag, c.release, count));
        try report(out, .{ .name = c.label, .value = best, .unit = "ns/value", .iterations = count });
    }
    const probe_after = "chan: core-to-core round trip, machine probe after the figures";
    if (want(probe_after)) try reportProbe(out, probe_after);
}

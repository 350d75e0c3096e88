//! The registry behind the C ABI's coroutine calls: stack pools (one per mode and size) and
//! the handle tables naming every coroutine created through it (hand-driven ones) or given a
//! handle by a scheduler (`register`).
//!
//! The two kinds have tables of their own, told apart by the handle's kind bits: a scheduled
//! coroutine lives on its scheduler's stacks, which a shutdown unmaps, so a call that only needs
//! to know which kind a handle names (resume and destroy refuse scheduled ones) must not read
//! the coroutine to find out; and a stale handle of one kind can never name a coroutine of the
//! other.
//!
//! `create` and `destroy` serialise on one mutex (they touch the pools), which a destroy lets go
//! of while the coroutine's cleanups run (they may reach the host's code: `finishDestroy`);
//! `get`, and therefore resume/unpark by handle, take no lock. Every call by handle is safe against
//! a destroy of the same handle on another thread (a thread that ends destroys the coroutines it
//! holds): the stacks stay mapped while the registry lives, a lookup is generation-checked, and a
//! destroy and a resume by handle (`identifyLive`, `Coroutine.resumeGen`) decide which of them wins
//! in one CAS of the coroutine's word: the destroy gets `Busy` if the resume started it first, the
//! resume `BadHandle` if the destroy marked it first. A `*Coroutine` taken from `get` and used
//! without that check must not race a destroy.
const std = @import("std");
const test_wait = @import("../test_wait.zig");
const assert = std.debug.assert;
const handle_mod = @import("../handle.zig");
const stack_mod = @import("stack.zig");
const coroutine = @import("coroutine.zig");

const Coroutine = coroutine.Coroutine;
const Pool = stack_mod.Pool;
pub const Handle = handle_mod.Handle;

pub const Flags = packed struct(u32) {
    fp_control: bool = false,
    slab_stack: bool = false,
    _unused: u30 = 0,
};

/// At most this many distinct (mode, stack size) pools.
pub const max_pools = 16;

pub const Error = error{ InvalidArgument, OutOfMemory, TooManyObjects, BadHandle, Busy };

/// Tests: code run at fixed points, to make a race's window certain. Only in test builds (an
/// empty struct otherwise): no caller of the library can set one.
pub var test_hooks: if (@import("builtin").is_test) struct {
    /// Called by a destroy (its coroutine marked, its handle freed) right before the
    /// coroutine's cleanups.
    before_cleanups: ?*const fn () void = null,
} else struct {} = .{};

pub const Registry = struct {
    allocator: std.mem.Allocator,
    mutex: std.Thread.Mutex = .{},
    pools: [max_pools]Pool = undefined,
    pool_count: usize = 0,
    /// Hand-driven coroutines (`create`).
    table: handle_mod.HandleTable(Coroutine, .coroutine),
    /// Scheduled coroutines given a handle (`register`).
    tasks: handle_mod.HandleTable(Coroutine, .task),

    /// An empty registry; its stacks and tables come from `allocator`. `deinit` frees them.
    pub fn init(allocator: std.mem.Allocator) Registry {
        return .{ .allocator = allocator, .table = .init(allocator), .tasks = .init(allocator) };
    }

    /// Destroys every coroutine still registered, then frees every stack and the table.
    pub fn deinit(r: *Registry) void {
        r.destroyAll();
        for (r.pools[0..r.pool_count]) |*p| p.deinit();
        r.table.deinit();
        r.tasks.deinit(); // every scheduler's coroutines were unregistered by their scheduler
        r.* = undefined;
    }

    /// Destroys every hand-driven coroutine that is not running (a scheduler frees its own).
    pub fn destroyAll(r: *Registry) void {
        var index: u32 = 1;
        while (index < r.table.high_water) : (index += 1) {
            const h = r.table.liveHandle(index) orelse continue;
            r.destroy(h) catch {}; // a running coroutine stays (deinit then asserts)
        }
    }

    /// A hand-driven coroutine running `entry(arg)` when first resumed (`get(h).resume()`), on a
    /// stack of `stack_size` bytes (0: 64 KiB; 16 KiB .. 256 MiB, else InvalidArgument). Its
    /// handle lives until `destroy`.
    pub fn create(
        r: *Registry,
        entry: coroutine.EntryFn,
        arg: ?*anyopaque,
        stack_size: usize,
        flags: Flags,
    ) Error!Handle {
        if (flags._unused != 0) return error.InvalidArgument;
        const size = if (stack_size == 0) stack_mod.default_stack_size else stack_size;
        if (size < stack_mod.min_stack_size or size > stack_mod.max_stack_size)
            return error.InvalidArgument;
        r.mutex.lock();
        defer r.mutex.unlock();
        const pool_id = try r.poolFor(if (flags.slab_stack) .slab else .guarded, size);
        const pool = &r.pools[pool_id];
        const st = pool.acquire() catch |e| switch (e) {
            error.OutOfMemory => return error.OutOfMemory,
            error.InvalidStackSize => unreachable, // checked above
        };
        const co = Coroutine.create(st, entry, arg, .{ .fp_control = flags.fp_control });
        const h = r.table.alloc(co) catch |e| {
            pool.release(st);
            return e;
        };
        // Release: pairs with the acquire load in `identifyLive` and `lookupRef`, which may read
        // it through a stale handle of this stack's previous coroutine at any time.
        @atomicStore(u32, &co.handle, h, .release);
        co.pool_id = pool_id;
        return h;
    }

    /// The hand-driven coroutine `h` names: InvalidArgument for a live scheduled one's handle
    /// (its scheduler runs and frees it), found without reading the coroutine (see the file
    /// header); BadHandle for a stale or forged one.
    pub fn get(r: *Registry, h: Handle) Error!*Coroutine {
        if (handle_mod.kindOf(h) == @intFromEnum(handle_mod.Kind.task)) {
            return if (r.tasks.get(h) != null) error.InvalidArgument else error.BadHandle;
        }
        const co = r.table.get(h) orelse return error.BadHandle;
        // Atomic, as `Coroutine.create` stores it: without the lock, a destroy and a create
        // reusing the stack on another thread may be rewriting the coroutine (a plain load was
        // a data race, ThreadSanitizer). Monotonic: always null on this registry's stacks.
        assert(@atomicLoad(?*anyopaque, &co.owner, .monotonic) == null);
        return co;
    }

    /// A coroutine's object and generation (a stack reused for a later coroutine has a later
    /// generation), for `destroyIfSame` and `resumeLive`.
    pub const Identity = struct { co: *Coroutine, gen: u32 };

    /// `identify` without the lock, for a call that may race a destroy of `h` (and a create
    /// that reuses its stack) on another thread: the generation is that of the coroutine `h`
    /// named, checked against the coroutine's own record of its handle. Pass it to
    /// `resumeLive`, which acts only on that generation.
    pub fn identifyLive(r: *Registry, h: Handle) Error!Identity {
        const co = try r.get(h);
        const gen = co.generation(); // acquire: pairs with `Coroutine.create`'s word store
        // Acquire: pairs with `create`'s release store of the handle. Read after the
        // generation: a stack reused since `get` shows its later generation with a handle of 0
        // (`Coroutine.create`) or the later coroutine's, never `h`; a generation read before
        // the reuse is checked again by `resumeGen`'s CAS.
        if (@atomicLoad(u32, &co.handle, .acquire) != h) return error.BadHandle;
        return .{ .co = co, .gen = gen };
    }

    /// Resumes the coroutine `id` (from `identifyLive(h)`) unless a destroy of `h` marked it
    /// first (BadHandle, also once its stack carries a later coroutine). A destroy that comes
    /// while it runs gets `Busy` (see the file header).
    pub fn resumeLive(r: *Registry, h: Handle, id: Identity) (Error || Coroutine.Error)!coroutine.State {
        return id.co.resumeGen(id.gen) catch |err| switch (err) {
            error.Stale => error.BadHandle,
            error.Finished => {
                // Finished, or marked by a destroy that holds the lock until it has freed the
                // handle: once we hold it, `h` is live only if the coroutine finished by itself.
                r.mutex.lock();
                defer r.mutex.unlock();
                return if (r.table.get(h) == null) error.BadHandle else error.Finished;
            },
            else => |e| e,
        };
    }

    /// Which coroutine `h` names now, as an `Identity`. As `get` for errors.
    pub fn identify(r: *Registry, h: Handle) Error!Identity {
        r.mutex.lock();
        defer r.mutex.unlock();
        const co = try r.get(h);
        return .{ .co = co, .gen = co.generation() };
    }

    /// `destroy`, but only if `h` still names the coroutine `id` identified (BadHandle
    /// otherwise: it was destroyed, and a later coroutine may have the handle value, its
    /// slot's generation having wrapped). Busy while it runs, as `destroy`.
    pub fn destroyIfSame(r: *Registry, h: Handle, id: Identity) Error!void {
        const co = blk: {
            r.mutex.lock();
            defer r.mutex.unlock();
            const co = r.get(h) catch return error.BadHandle;
            if (co != id.co or co.generation() != id.gen) return error.BadHandle;
            break :blk try r.detachLocked(h);
        };
        r.finishDestroy(co);
    }

    /// Frees the coroutine and returns its stack to the pool. A coroutine that is not finished
    /// is abandoned where it stands: its stack is reused without unwinding it.
    pub fn destroy(r: *Registry, h: Handle) Error!void {
        const co = blk: {
            r.mutex.lock();
            defer r.mutex.unlock();
            break :blk try r.detachLocked(h);
        };
        r.finishDestroy(co);
    }

    /// The first half of `destroy`, under `mutex`: marks the coroutine finished and frees its
    /// handle. Its stack is still out of the pool: nothing else can use it before
    /// `finishDestroy`.
    fn detachLocked(r: *Registry, h: Handle) Error!*Coroutine {
        const co = try r.get(h); // a scheduled one's handle: InvalidArgument (it frees it)
        if (coroutine.current()) |cur| {
            if (cur == co) return error.Busy;
        }
        // First, in one CAS: a resume by handle on another thread either started it (Busy:
        // it runs) or will find it finished and the handle freed (see the file header). A
        // waker's late unpark (a stale `Ref`) wakes nobody from here on.
        if (!co.abandon()) return error.Busy;
        assert(co.pool_id < r.pool_count);
        _ = r.table.free(h);
        return co;
    }

    /// The second half of `destroy`: the cleanups (a wait it was parked in must not outlive
    /// its stack), then the stack back to its pool under `mutex`. The cleanups run without the
    /// lock: they take channel locks (unlinking a waiter), and a channel's undelivered hook or
    /// a descriptor's release runs the host's code under its channel's lock, which may create,
    /// resume or destroy a coroutine (this mutex). Under the lock, a destroy of a coroutine
    /// parked on a channel deadlocked with such a hook run on another thread (a cancel of that
    /// channel): each held the lock the other waited for.
    fn finishDestroy(r: *Registry, co: *Coroutine) void {
        const st = co.stack;
        if (@import("builtin").is_test) if (test_hooks.before_cleanups) |f| f();
        co.runCleanups();
        co.setContext(@import("../sc/context.zig").empty);
        r.mutex.lock();
        defer r.mutex.unlock();
        r.pools[co.pool_id].release(st);
    }

    /// Gives a handle to a coroutine created elsewhere (a scheduler's); `unregister` frees it.
    pub fn register(r: *Registry, co: *Coroutine) Error!Handle {
        assert(co.owner != null);
        const h = try r.tasks.alloc(co);
        // Release: pairs with the acquire load in `lookupRef`.
        @atomicStore(u32, &co.handle, h, .release);
        return h;
    }

    /// Frees the handle `register` gave a scheduled coroutine (its scheduler's finish hook).
    pub fn unregister(r: *Registry, co: *Coroutine) void {
        // Acquire: pairs with `register`'s release store (made on the spawner's thread).
        const h = @atomicLoad(u32, &co.handle, .acquire);
        if (h == 0) return;
        // Release: pairs with `lookupRef`'s acquire load, which then fails the handle.
        @atomicStore(u32, &co.handle, 0, .release);
        _ = r.tasks.free(h);
    }

    /// The coroutine and generation `h` names, checked against the coroutine's own record of
    /// its handle, so that a handle whose coroutine finished (and whose stack was reused) is
    /// rejected even if the lookup raced the finish.
    pub fn lookupRef(r: *Registry, h: Handle) Error!coroutine.Ref {
        const co = (if (handle_mod.kindOf(h) == @intFromEnum(handle_mod.Kind.task)) r.tasks.get(h) else r.table.get(h)) orelse
            return error.BadHandle;
        const gen = co.generation();
        // Acquire: pairs with the release stores of `register` and `unregister`; read after
        // the generation, so a handle freed before that read fails here.
        if (@atomicLoad(u32, &co.handle, .acquire) != h) return error.BadHandle;
        // No epoch: a lookup is of the scheduler's current run (its caller counts itself in the
        // lookups a shutdown waits for), which its caller supplies (kc_coro_unpark).
        return .{ .co = co, .gen = gen, .epoch = 0 };
    }

    pub const Stats = struct {
        live: u32,
        pooled_stacks: usize,
        mappings: usize,
    };

    /// Live coroutines (hand-driven and registered), pooled free stacks, stack mappings.
    pub fn stats(r: *Registry) Stats {
        r.mutex.lock();
        defer r.mutex.unlock();
        // A snapshot: `tasks` changes under its own mutex (a scheduler's spawns), not ours.
        var s: Stats = .{ .live = r.table.live + r.tasks.live, .pooled_stacks = 0, .mappings = 0 };
        for (r.pools[0..r.pool_count]) |*p| {
            s.pooled_stacks += p.free_count;
            s.mappings += p.mappingCount();
        }
        return s;
    }

    fn poolFor(r: *Registry, mode: stack_mod.Mode, size: usize) Error!u16 {
        const rounded = std.mem.alignForward(usize, size, stack_mod.page_size);
        for (r.pools[0..r.pool_count], 0..) |*p, i| {
            if (p.mode == mode and p.stack_size == rounded) return @intCast(i);
        }
        if (r.pool_count == max_pools) return error.InvalidArgument;
        // Kept mapped: a completer wakes a channel's waiter by `Ref` after it unlocked the
        // channel, so a coroutine destroyed meanwhile (by another thread) still gets that
        // unpark, which must find its generation word mapped and continuing (see `Pool`).
        r.pools[r.pool_count] = Pool.init(r.allocator, .{ .mode = mode, .stack_size = rounded, .keep_mapped = true }) catch
            return error.InvalidArgument;
        r.pool_count += 1;
        return @intCast(r.pool_count - 1);
    }
};

const testing = std.testing;

fn countUp(arg: ?*anyopaque) callconv(.c) void {
    const n: *u64 = @ptrCast(@alignCast(arg.?));
    n.* += 1;
}

test "100,000 create-run-finish cycles reuse stacks and leak nothing" {
    var r = Registry.init(testing.allocator);
    defer r.deinit();
    var n: u64 = 0;
    for (0..100_000) |_| {
        const h = try r.create(countUp, &n, 0, .{});
        const co = try r.get(h);
        try testing.expectEqual(coroutine.State.finished, try co.@"resume"());
        try r.destroy(h);
        try testing.expectError(error.BadHandle, r.get(h));
    }
    try testing.expectEqual(@as(u64, 100_000), n);
    const s = r.stats();
    try testing.expectEqual(@as(u32, 0), s.live);
    try testing.expectEqual(@as(usize, 1), s.mappings); // one stack, reused every time
    try testing.expectEqual(@as(usize, 1), s.pooled_stacks);
}

test "slab stacks: many live coroutines in few mappings" {
    var r = Registry.init(testing.allocator);
    defer r.deinit();
    var n: u64 = 0;
    var hs: [3000]Handle = undefined;
    for (&hs) |*h| h.* = try r.create(countUp, &n, 16 * 1024, .{ .slab_stack = true });
    try testing.expect(r.stats().mappings <= 2);
    for (hs) |h| _ = try (try r.get(h)).@"resume"();
    try testing.expectEqual(@as(u64, 3000), n);
    // deinit destroys what is left (half of them here) and frees every mapping.
    for (hs[0..1500]) |h| try r.destroy(h);
}

test "bad arguments and handles are errors" {
    var r = Registry.init(testing.allocator);
    defer r.deinit();
    var n: u64 = 0;
    try testing.expectError(error.InvalidArgument, r.create(countUp, &n, 100, .{}));
    try testing.expectError(error.InvalidArgument, r.create(countUp, &n, 0, @bitCast(@as(u32, 0x80))));
    try testing.expectError(error.BadHandle, r.get(0));
    try testing.expectError(error.BadHandle, r.get(0xDEADBEEF));
    try testing.expectError(error.BadHandle, r.destroy(12345));
    const h = try r.create(countUp, &n, 0, .{});
    try r.destroy(h);
    try testing.expectError(error.BadHandle, r.destroy(h));
}

test "a coroutine cannot destroy itself while running" {
    var r = Registry.init(testing.allocator);
    defer r.deinit();
    const S = struct {
        var reg: *Registry = undefined;
        var result: ?Error = null;
        fn entry(_: ?*anyopaque) callconv(.c) void {
            const me = coroutine.current().?;
            reg.destroy(me.handle) catch |e| {
                result = e;
            };
        }
    };
    S.reg = &r;
    const h = try r.create(S.entry, null, 0, .{});
    _ = try (try r.get(h)).@"resume"();
    try testing.expectEqual(@as(?Error, error.Busy), S.result);
    try r.destroy(h);
}

test "a stale Ref to a destroyed coroutine stays harmless once its pool holds max_free stacks" {
    // A channel's completer wakes its waiter by `Ref` after it unlocks the channel, so the
    // waiter's coroutine may be destroyed (by another thread) before that unpark lands: the
    // Ref's word must still be mapped, and must never wake a later coroutine at that address.
    // Run in a child: without the guarantee the unpark faults on an unmapped page.
    const pid = try std.posix.fork();
    if (pid == 0) {
        var r = Registry.init(std.heap.page_allocator);
        const S = struct {
            fn parker(_: ?*anyopaque) callconv(.c) void {
                coroutine.park() catch unreachable;
            }
        };
        // Fill the pool's free list to its cap (1024): the next destroy's stack is beyond it.
        var hs: [1024]Handle = undefined;
        for (&hs) |*h| h.* = r.create(S.parker, null, 0, .{}) catch std.posix.exit(2);
        const x = r.create(S.parker, null, 0, .{}) catch std.posix.exit(2);
        for (hs) |h| r.destroy(h) catch std.posix.exit(2);
        const co = r.get(x) catch std.posix.exit(2);
        _ = co.@"resume"() catch std.posix.exit(2); // parked in a "wait"
        const stale = co.ref();
        r.destroy(x) catch std.posix.exit(2); // its completer has not woken it yet
        if (stale.unpark()) std.posix.exit(3); // the late wake: harmless, wakes nobody
        // A new coroutine (perhaps at the same address) is no target of the stale Ref either.
        const y = r.create(S.parker, null, 0, .{}) catch std.posix.exit(2);
        const co_y = r.get(y) catch std.posix.exit(2);
        _ = co_y.@"resume"() catch std.posix.exit(2);
        if (stale.unpark()) std.posix.exit(4);
        if (co_y.getState() != .parked) std.posix.exit(5);
        std.posix.exit(0);
    }
    const res = try test_wait.waitChild(pid, test_wait.test_ns, "the forked child");
    try testing.expect(std.posix.W.IFEXITED(res.status));
    try testing.expectEqual(@as(u32, 0), std.posix.W.EXITSTATUS(res.status));
}

test "a scheduled coroutine's handle is told by its kind: refused by get without reading it" {
    var r = Registry.init(testing.allocator);
    defer r.deinit();
    var pool = try Pool.init(testing.allocator, .{});
    defer pool.deinit();
    const st = try pool.acquire();
    defer pool.release(st);
    var n: u64 = 0;
    const co = Coroutine.create(st, countUp, &n, .{});
    var owner: u8 = 0;
    co.owner = &owner; // as a scheduler's
    const h = try r.register(co);
    try testing.expectEqual(@as(u3, @intFromEnum(handle_mod.Kind.task)), handle_mod.kindOf(h));
    try testing.expectError(error.InvalidArgument, r.get(h));
    try testing.expectError(error.InvalidArgument, r.destroy(h));
    try testing.expectEqual(co, (try r.lookupRef(h)).co);
    try testing.expectEqual(@as(u32, 1), r.stats().live);
    r.unregister(co);
    try testing.expectError(error.BadHandle, r.get(h));
    try testing.expectError(error.BadHandle, r.lookupRef(h));
    // A hand-driven coroutine's handle is of the other kind, in the other table.
    const hd = try r.create(countUp, &n, 0, .{});
    try testing.expectEqual(@as(u3, @intFromEnum(handle_mod.Kind.coroutine)), handle_mod.kindOf(hd));
    try testing.expect((try r.get(hd)).owner == null);
    try r.destroy(hd);
    co.discardUnstarted();
}

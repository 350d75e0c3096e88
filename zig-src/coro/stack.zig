//! Coroutine stacks: mmap'd, page-aligned, pooled and reused. One `Pool` hands out stacks of one
//! size and one mode; it is not thread-safe (the owner serialises calls: the C ABI under its
//! lock, a scheduler worker for its own pool).
//!
//! Two modes, because Linux caps a process at `vm.max_map_count` mappings (65530 here) and a
//! guard page costs a mapping of its own:
//!
//! - `guarded` (default): each stack is its own mapping with a PROT_NONE guard page below it.
//!   An overflow faults at once (SIGSEGV) on the guard page; Zig and C compilers probe frames
//!   larger than a page, so a big frame cannot jump over it. Costs two mappings per stack, so a
//!   process holds at most `stackBudget()` of them (24,573 at the default count).
//! - `slab`: stacks are carved from large shared mappings (`slab_bytes` each) with one guard
//!   page at the bottom of each slab; the lowest 64 bytes of each stack are a canary that must
//!   stay zero. An overflow into the neighbour below is not prevented; it is detected, after
//!   the fact, when the canary is checked (every time the stack goes back to or leaves the
//!   pool), and the process panics with "stack overflow detected". The canary is the zero
//!   fill of fresh anonymous memory, never written, so checking it never makes the bottom page
//!   resident (an overflow that writes only zeros there goes unnoticed). Costs two mappings per
//!   slab, so a million coroutines fit. Slab memory is reserved with MAP_NORESERVE: only touched
//!   pages use RAM, one page for a coroutine that never grew its stack. Slabs count against the
//!   same `stackBudget()` as guarded stacks (two mappings each): a slab holds one stack of
//!   `slab_bytes` or more, and without the budget 32,765 such stacks (address space only, with
//!   MAP_NORESERVE) took every mapping the process had.
//!
//! Free stacks form an intrusive list threaded through their top word, so acquiring and
//! releasing a pooled stack never allocates.
//!
//! Under valgrind (a build with `valgrind_support`: Debug on x86_64 Linux), every stack is
//! registered with it as a stack of its own (VALGRIND_STACK_REGISTER) while it is mapped.
//! Memcheck otherwise took a switch between two stacks of one pool (neighbours, closer than its
//! 2 MB `--max-stackframe`) for a stack pointer moving within one stack, marked the frames in
//! between unaddressable or undefined, and reported thousands of invalid reads and writes in a
//! correct program on the scheduler. Not under valgrind, or without support, nothing is kept.
const std = @import("std");
const test_wait = @import("../test_wait.zig");
const tidy = @import("../tidy.zig");
const posix = std.posix;
const assert = std.debug.assert;

pub const page_size = std.heap.page_size_min;

pub const Mode = enum(u8) { guarded = 0, slab = 1 };

pub const default_stack_size: usize = 64 * 1024;
pub const min_stack_size: usize = 16 * 1024;
pub const max_stack_size: usize = 256 * 1024 * 1024;
/// Bytes of stacks per slab mapping (slab mode).
pub const slab_bytes: usize = 64 * 1024 * 1024;

const canary_len = 64;
comptime {
    // README.md, "Coroutine core", the stack modes table (slab): "the lowest 64 bytes of each
    // stack must stay zero". A change here changes that text too.
    if (canary_len != 64) @compileError("canary_len changed: README.md (Coroutine core, the slab row) says 64 bytes");
}
/// Fresh anonymous memory is zero-filled; the canary is that zero fill.
const canary_byte: u8 = 0;

comptime {
    assert(default_stack_size % page_size == 0);
    assert(min_stack_size % page_size == 0);
    assert(slab_bytes % default_stack_size == 0);
}

/// A usable stack region [base, base + size); the coroutine's stack grows down from `top()`.
pub const Stack = struct {
    base: usize,
    size: usize,

    pub fn top(s: Stack) usize {
        return s.base + s.size;
    }
};

const FreeNode = struct { next: ?*FreeNode };

/// Guarded stacks and slabs mapped now, by every pool of the process (each is two of the
/// process's `vm.max_map_count` mappings: the usable part and its guard page). Monotonic RMWs:
/// a budget, ordering nothing.
var stacks_mapped = std.atomic.Value(usize).init(0);
/// Mappings left to the rest of the process (the JavaScript engine's heap pages, malloc arenas,
/// thread stacks): guarded stacks and slabs stop at `(max_map_count - map_headroom) / 2`, so
/// that running out of them is KC_ENOMEM for the caller, not an engine that cannot map its heap
/// and aborts the process.
pub const map_headroom = 16 * 1024;
/// Tests set a small budget here; null reads `/proc/sys/vm/max_map_count` once.
pub var stack_budget_override: ?usize = null;
var stack_budget_cached = std.atomic.Value(usize).init(0);

/// How many guarded stacks and slabs the process may map at once (see `map_headroom`).
pub fn stackBudget() usize {
    if (stack_budget_override) |b| return b;
    const cached = stack_budget_cached.load(.monotonic);
    if (cached != 0) return cached;
    const max_maps = readMaxMapCount() orelse 65530;
    const budget = @max(1024, (max_maps -| map_headroom) / 2);
    stack_budget_cached.store(budget, .monotonic); // the same value from every racer
    return budget;
}

fn readMaxMapCount() ?usize {
    const file = std.fs.openFileAbsolute("/proc/sys/vm/max_map_count", .{}) catch return null;
    defer file.close();
    var buf: [32]u8 = undefined;
    const n = file.read(&buf) catch return null;
    return std.fmt.parseInt(usize, std.mem.trim(u8, buf[0..n], " \n"), 10) catch null;
}

const Mapping = struct {
    addr: usize,
    len: usize,
    /// Guarded mode under valgrind: the id of the registered stack (`vgRegister`).
    vg_id: ?usize = null,
};

const vg_support = @import("builtin").valgrind_support;

/// Registers `s` with valgrind as a stack (see the file header): its id, or null when not
/// running under valgrind (or built without support).
fn vgRegister(s: Stack) ?usize {
    if (!vg_support or std.valgrind.runningOnValgrind() == 0) return null;
    const p: [*]u8 = @ptrFromInt(s.base);
    return std.valgrind.stackRegister(p[0..s.size]);
}

pub const Pool = struct {
    allocator: std.mem.Allocator,
    mode: Mode,
    stack_size: usize,
    /// Free stacks kept for reuse as they are; beyond this, a released guarded stack is
    /// unmapped, or trimmed if `keep_mapped` (see `Options`).
    max_free: usize,
    keep_mapped: bool,
    free_head: ?*FreeNode = null,
    free_count: usize = 0,
    /// Stacks handed out and not yet released.
    live: usize = 0,
    /// Guarded mode: one mapping per stack ever mapped and not unmapped.
    /// Slab mode: the slab mappings.
    mappings: std.ArrayListUnmanaged(Mapping) = .empty,
    /// Guarded mode: where each mapping is in `mappings`, by address, so that unmapping one
    /// beyond `max_free` is not a search through tens of thousands.
    where: std.AutoHashMapUnmanaged(usize, u32) = .empty,
    /// Removals from `where` since it was last tidied (`tidy.fetchRemoveTidy`): each new mapping
    /// is a new address, whose insert probes past the tombstones of the removed ones.
    where_removed: u32 = 0,
    /// Slab mode: next never-used stack in the newest slab.
    slab_next: usize = 0,
    slab_end: usize = 0,
    /// Slab mode under valgrind: the ids of the stacks carved and registered (`vgRegister`),
    /// deregistered when the slabs are unmapped. Empty when not under valgrind.
    vg_ids: std.ArrayListUnmanaged(usize) = .empty,

    pub const Options = struct {
        mode: Mode = .guarded,
        stack_size: usize = default_stack_size,
        max_free: usize = 1024,
        /// Never unmap a stack while the pool lives: one released beyond `max_free` is trimmed
        /// instead (its pages below the top one go back to the kernel, MADV_DONTNEED) and stays
        /// on the free list. For owners whose coroutines a late waker may still touch after the
        /// stack was released: a `Ref`'s unpark reads the generation word in the top page, which
        /// must stay mapped and keep counting (a stack mapped afresh at the same address starts
        /// again at generation 1, which a stale `Ref` could match).
        keep_mapped: bool = false,
    };

    pub const Error = error{ InvalidStackSize, OutOfMemory };

    pub fn init(allocator: std.mem.Allocator, options: Options) Error!Pool {
        if (options.stack_size < min_stack_size or options.stack_size > max_stack_size)
            return error.InvalidStackSize;
        const size = std.mem.alignForward(usize, options.stack_size, page_size);
        return .{
            .allocator = allocator,
            .mode = options.mode,
            .stack_size = size,
            .max_free = options.max_free,
            .keep_mapped = options.keep_mapped,
        };
    }

    /// Unmaps every stack. Every acquired stack must have been released.
    pub fn deinit(pool: *Pool) void {
        assert(pool.live == 0); // a stack still in use would be unmapped under its coroutine
        if (pool.mode == .guarded) {
            // Free stacks are exactly the mappings still held.
            assert(pool.free_count == pool.mappings.items.len);
        }
        pool.deinitAbandoning();
    }

    /// Unmaps every stack, including those still handed out: for a scheduler that has stopped
    /// every thread that could run on them (shutdown abandoning unfinished coroutines).
    pub fn deinitAbandoning(pool: *Pool) void {
        for (pool.vg_ids.items) |id| std.valgrind.stackDeregister(id);
        pool.vg_ids.deinit(pool.allocator);
        for (pool.mappings.items) |m| unmap(m);
        // Guarded stacks and slabs alike: each mapping took one from the budget.
        _ = stacks_mapped.fetchSub(pool.mappings.items.len, .monotonic);
        pool.mappings.deinit(pool.allocator);
        pool.where.deinit(pool.allocator);
        pool.* = undefined;
    }

    pub fn acquire(pool: *Pool) Error!Stack {
        if (pool.free_head) |node| {
            pool.free_head = node.next;
            pool.free_count -= 1;
            pool.live += 1;
            const top = @intFromPtr(node) + @sizeOf(FreeNode);
            const s: Stack = .{ .base = top - pool.stack_size, .size = pool.stack_size };
            if (pool.mode == .slab) pool.checkCanary(s);
            return s;
        }
        const s = switch (pool.mode) {
            .guarded => try pool.mapGuarded(),
            .slab => try pool.carveSlab(),
        };
        pool.live += 1;
        return s;
    }

    pub fn release(pool: *Pool, s: Stack) void {
        assert(pool.live > 0);
        assert(s.size == pool.stack_size);
        pool.live -= 1;
        if (pool.mode == .slab) pool.checkCanary(s);
        if (pool.mode == .guarded and pool.free_count >= pool.max_free) {
            if (!pool.keep_mapped) return pool.unmapGuarded(s);
            trim(s);
        }
        const node: *FreeNode = @ptrFromInt(s.top() - @sizeOf(FreeNode));
        node.next = pool.free_head;
        pool.free_head = node;
        pool.free_count += 1;
    }

    /// Calls `f(ctx, stack)` for every stack this pool ever handed out or could hand out from
    /// its mappings (used, free or never touched). Guarded mode: only the stacks it mapped.
    pub fn forEachStack(pool: *const Pool, ctx: anytype, comptime f: fn (@TypeOf(ctx), Stack) void) void {
        for (pool.mappings.items) |m| {
            var base = m.addr + page_size;
            while (base + pool.stack_size <= m.addr + m.len) : (base += pool.stack_size) {
                f(ctx, .{ .base = base, .size = pool.stack_size });
            }
        }
    }

    /// Number of mappings this pool holds (what counts against vm.max_map_count, times two).
    pub fn mappingCount(pool: *const Pool) usize {
        return pool.mappings.items.len;
    }

    fn checkCanary(pool: *const Pool, s: Stack) void {
        _ = pool;
        const bytes: *const [canary_len]u8 = @ptrFromInt(s.base);
        for (bytes) |b| {
            if (b != canary_byte) @panic("kcoro: stack overflow detected (slab stack canary overwritten)");
        }
    }

    /// Maps `usable` bytes with a PROT_NONE guard page below them, records the mapping, and
    /// returns the address of the usable part.
    fn mapWithGuard(pool: *Pool, usable: usize) Error!usize {
        try pool.mappings.ensureUnusedCapacity(pool.allocator, 1);
        const len = usable + page_size;
        const mem = posix.mmap(
            null,
            len,
            posix.PROT.READ | posix.PROT.WRITE,
            .{ .TYPE = .PRIVATE, .ANONYMOUS = true, .NORESERVE = true },
            -1,
            0,
        ) catch return error.OutOfMemory;
        posix.mprotect(mem[0..page_size], posix.PROT.NONE) catch {
            posix.munmap(mem);
            return error.OutOfMemory;
        };
        pool.mappings.appendAssumeCapacity(.{ .addr = @intFromPtr(mem.ptr), .len = len });
        return @intFromPtr(mem.ptr) + page_size;
    }

    /// One more mapping (a guarded stack or a slab) from the process's budget, or OutOfMemory.
    fn takeBudget() Error!void {
        if (stacks_mapped.fetchAdd(1, .monotonic) >= stackBudget()) {
            _ = stacks_mapped.fetchSub(1, .monotonic);
            return error.OutOfMemory;
        }
    }

    fn mapGuarded(pool: *Pool) Error!Stack {
        try takeBudget();
        errdefer _ = stacks_mapped.fetchSub(1, .monotonic);
        try pool.where.ensureUnusedCapacity(pool.allocator, 1);
        const s: Stack = .{ .base = try pool.mapWithGuard(pool.stack_size), .size = pool.stack_size };
        pool.where.putAssumeCapacity(s.base - page_size, @intCast(pool.mappings.items.len - 1));
        pool.mappings.items[pool.mappings.items.len - 1].vg_id = vgRegister(s);
        touchTop(s);
        return s;
    }

    /// Writes the (already zero) top page of a never-used stack. `Coroutine.create` reads the
    /// previous generation there before writing; on an untouched page that read maps the shared
    /// zero page and the write that follows replaces it, which flushes the TLB of every CPU the
    /// process ran on (an IPI each; spawning 1,000 coroutines paid ~10 ms). A first write
    /// allocates the page once, with no flush.
    fn touchTop(s: Stack) void {
        const last: *volatile u8 = @ptrFromInt(s.top() - 1);
        last.* = 0;
    }

    /// Gives the pages of `s` below its top page back to the kernel (they read as zeros when
    /// next touched); the top page, where the coroutine object and the free-list link live,
    /// keeps its contents.
    fn trim(s: Stack) void {
        const len = s.size - page_size;
        if (len == 0) return;
        const p: [*]align(page_size) u8 = @ptrFromInt(s.base);
        // Advice only: a failure leaves the pages resident, as they were.
        posix.madvise(p, len, posix.MADV.DONTNEED) catch {};
    }

    fn unmapGuarded(pool: *Pool, s: Stack) void {
        const addr = s.base - page_size;
        // Tidied: under churn (stacks mapped and unmapped beyond `max_free` while others stay
        // live) plain removals left tombstones until no slot was free and each insert and
        // look-up walked the whole table.
        const kv = tidy.fetchRemoveTidy(&pool.where, &pool.where_removed, addr) orelse unreachable; // mapped by mapGuarded
        const i = kv.value;
        const m = pool.mappings.items[i];
        assert(m.addr == addr);
        unmap(m);
        _ = pool.mappings.swapRemove(i);
        // The last mapping moved into slot i.
        if (i < pool.mappings.items.len) pool.where.getPtr(pool.mappings.items[i].addr).?.* = i;
        _ = stacks_mapped.fetchSub(1, .monotonic);
    }

    fn carveSlab(pool: *Pool) Error!Stack {
        // Before anything changes: no room for the id is an OutOfMemory with nothing carved.
        const vg = vg_support and std.valgrind.runningOnValgrind() != 0;
        if (vg) try pool.vg_ids.ensureUnusedCapacity(pool.allocator, 1);
        if (pool.slab_next == pool.slab_end) {
            const usable = @max(1, slab_bytes / pool.stack_size) * pool.stack_size;
            try takeBudget();
            errdefer _ = stacks_mapped.fetchSub(1, .monotonic);
            pool.slab_next = try pool.mapWithGuard(usable);
            pool.slab_end = pool.slab_next + usable;
        }
        const s: Stack = .{ .base = pool.slab_next, .size = pool.stack_size };
        pool.slab_next += pool.stack_size;
        assert(pool.slab_next <= pool.slab_end);
        if (vg) pool.vg_ids.appendAssumeCapacity(vgRegister(s).?);
        touchTop(s);
        return s;
    }

    fn unmap(m: Mapping) void {
        if (m.vg_id) |id| std.valgrind.stackDeregister(id);
        const p: [*]align(page_size) u8 = @ptrFromInt(m.addr);
        posix.munmap(p[0..m.len]);
    }
};

const testing = std.testing;

test "guarded stacks are reused and all unmapped at deinit" {
    var pool = try Pool.init(testing.allocator, .{ .mode = .guarded, .max_free = 4 });
    defer pool.deinit();
    const a = try pool.acquire();
    const b = try pool.acquire();
    try testing.expect(a.base % page_size == 0);
    try testing.expectEqual(@as(usize, 2), pool.mappingCount());
    pool.release(a);
    const c = try pool.acquire();
    try testing.expectEqual(a.base, c.base); // reused, not mapped again
    try testing.expectEqual(@as(usize, 2), pool.mappingCount());
    // The whole usable range is writable.
    const mem: [*]u8 = @ptrFromInt(c.base);
    @memset(mem[0..c.size], 0xAB);
    pool.release(b);
    pool.release(c);
}

test "guarded pool unmaps beyond max_free" {
    var pool = try Pool.init(testing.allocator, .{ .mode = .guarded, .max_free = 1 });
    defer pool.deinit();
    var stacks: [4]Stack = undefined;
    for (&stacks) |*s| s.* = try pool.acquire();
    try testing.expectEqual(@as(usize, 4), pool.mappingCount());
    for (stacks) |s| pool.release(s);
    try testing.expectEqual(@as(usize, 1), pool.mappingCount());
    try testing.expectEqual(@as(usize, 1), pool.free_count);
}

test "a pool that keeps its stacks mapped trims those beyond max_free instead" {
    var pool = try Pool.init(testing.allocator, .{ .mode = .guarded, .max_free = 1, .keep_mapped = true });
    defer pool.deinit();
    var stacks: [3]Stack = undefined;
    for (&stacks) |*st| st.* = try pool.acquire();
    for (stacks) |st| {
        const mem: [*]u8 = @ptrFromInt(st.base);
        @memset(mem[0..st.size], 0xAB);
    }
    for (stacks) |st| pool.release(st);
    try testing.expectEqual(@as(usize, 3), pool.mappingCount()); // none unmapped
    try testing.expectEqual(@as(usize, 3), pool.free_count);
    // The first stays as it was; the other two lost their lower pages, not their top page.
    const first: [*]const u8 = @ptrFromInt(stacks[0].base);
    try testing.expectEqual(@as(u8, 0xAB), first[0]);
    for (stacks[1..]) |st| {
        const mem: [*]const u8 = @ptrFromInt(st.base);
        try testing.expectEqual(@as(u8, 0), mem[0]);
        try testing.expectEqual(@as(u8, 0), mem[st.size - page_size - 1]);
        try testing.expectEqual(@as(u8, 0xAB), mem[st.size - page_size]);
    }
    for (&stacks) |*st| st.* = try pool.acquire();
    try testing.expectEqual(@as(usize, 3), pool.mappingCount()); // all reused
    for (stacks) |st| pool.release(st);
}

test "guarded stacks stop at the process's budget (KC_ENOMEM), and a release makes room" {
    stack_budget_override = stacks_mapped.load(.monotonic) + 3;
    defer stack_budget_override = null;
    var pool = try Pool.init(testing.allocator, .{ .mode = .guarded, .max_free = 0 });
    defer pool.deinit();
    var stacks: [3]Stack = undefined;
    for (&stacks) |*st| st.* = try pool.acquire();
    try testing.expectError(error.OutOfMemory, pool.acquire());
    pool.release(stacks[1]); // unmapped (max_free 0): its budget comes back
    stacks[1] = try pool.acquire();
    try testing.expectError(error.OutOfMemory, pool.acquire());
    for (stacks) |st| pool.release(st);
    try testing.expectEqual(@as(usize, 0), pool.mappingCount());
}

/// Expects the pool's next acquire to fail with OutOfMemory; a stack it got anyway goes back, so
/// that the failure is the test's, not `deinit`'s assertion that every stack came back.
fn expectNoStack(pool: *Pool) !void {
    const st = pool.acquire() catch |e| return testing.expectEqual(error.OutOfMemory, e);
    pool.release(st);
    return error.TestExpectedOutOfMemory;
}

test "a pool that keeps its stacks mapped holds its peak against the budget, and reuses it" {
    // The C ABI's pools (coro/registry.zig) never unmap: a burst's stacks stay mapped, trimmed,
    // for the life of the process. They stay counted, so a burst cannot take more of
    // vm.max_map_count than the budget; and coming back, it reuses them without a new mapping.
    stack_budget_override = stacks_mapped.load(.monotonic) + 3;
    defer stack_budget_override = null;
    var pool = try Pool.init(testing.allocator, .{ .mode = .guarded, .max_free = 0, .keep_mapped = true });
    defer pool.deinit();
    var stacks: [3]Stack = undefined;
    var n: usize = 0;
    defer for (stacks[0..n]) |st| pool.release(st);
    while (n < stacks.len) : (n += 1) stacks[n] = try pool.acquire();
    try expectNoStack(&pool);
    for (stacks) |st| pool.release(st); // trimmed (max_free 0), kept mapped, still counted
    n = 0;
    try testing.expectEqual(@as(usize, 3), pool.mappingCount());
    // All three reused, from the free list (which cannot fail): no budget needed.
    while (n < stacks.len) : (n += 1) stacks[n] = try pool.acquire();
    try expectNoStack(&pool);
}

test "slabs count against the budget too: stacks of a slab's size or more take one each" {
    // Each slab is two mappings, as a guarded stack is. Unbounded, a slab pool of stacks of
    // `slab_bytes` (one per slab; address space only, MAP_NORESERVE) reached vm.max_map_count
    // at 32,765 stacks, and the next mapping anyone made failed: the JavaScript engine's heap.
    const before = stacks_mapped.load(.monotonic);
    stack_budget_override = before + 2;
    defer stack_budget_override = null;
    {
        var pool = try Pool.init(testing.allocator, .{ .mode = .slab, .stack_size = slab_bytes });
        defer pool.deinit();
        var held: [2]Stack = .{ try pool.acquire(), undefined };
        held[1] = pool.acquire() catch |e| {
            pool.release(held[0]);
            return e;
        };
        defer for (held) |st| pool.release(st);
        try testing.expectEqual(@as(usize, 2), pool.mappingCount());
        try expectNoStack(&pool);
        try testing.expectEqual(@as(usize, 2), pool.mappingCount()); // nothing mapped for it
        const a = held[0];
        pool.release(a);
        held[0] = pool.acquire() catch unreachable; // from the free list: no new slab
        try testing.expectEqual(a.base, held[0].base);
    }
    try testing.expectEqual(before, stacks_mapped.load(.monotonic)); // deinit gave both back
    // Small stacks share a slab, which takes one from the budget for all of them.
    stack_budget_override = before + 1;
    var pool = try Pool.init(testing.allocator, .{ .mode = .slab, .stack_size = min_stack_size });
    defer pool.deinit();
    var stacks: [1000]Stack = undefined;
    var n: usize = 0;
    defer for (stacks[0..n]) |st| pool.release(st);
    while (n < stacks.len) : (n += 1) stacks[n] = try pool.acquire();
    try testing.expectEqual(@as(usize, 1), pool.mappingCount());
}

test "an acquire whose mapping cannot be recorded gives its budget back: a guarded stack, a slab" {
    // The budget is taken before the mapping; a failure after it (no room to record the
    // mapping, an mmap refused) must give it back, or each failed acquire would shrink the
    // process's budget for good, until every spawn failed with KC_ENOMEM.
    for ([_]Mode{ .guarded, .slab }) |mode| {
        const before = stacks_mapped.load(.monotonic);
        var failing = std.testing.FailingAllocator.init(testing.allocator, .{ .fail_index = 0 });
        var pool = try Pool.init(failing.allocator(), .{ .mode = mode });
        defer pool.deinit();
        try expectNoStack(&pool);
        try testing.expectEqual(@as(usize, 0), pool.mappingCount());
        try testing.expectEqual(before, stacks_mapped.load(.monotonic));
    }
}

test "the default budget leaves the rest of the process its mappings" {
    const b = stackBudget();
    try testing.expect(b >= 1024);
    if (readMaxMapCount()) |max_maps| try testing.expect(2 * b + map_headroom <= @max(max_maps, 2 * 1024 + map_headroom));
}

test "unmapping beyond max_free finds each mapping directly, in any order" {
    var pool = try Pool.init(testing.allocator, .{ .mode = .guarded, .max_free = 2 });
    defer pool.deinit();
    var stacks: [64]Stack = undefined;
    for (&stacks) |*st| st.* = try pool.acquire();
    var prng = std.Random.DefaultPrng.init(0x5eed);
    prng.random().shuffle(Stack, &stacks);
    for (stacks) |st| pool.release(st);
    try testing.expectEqual(@as(usize, 2), pool.mappingCount());
    try testing.expectEqual(@as(usize, 2), pool.where.count());
    for (pool.mappings.items, 0..) |m, i| try testing.expectEqual(@as(u32, @intCast(i)), pool.where.get(m.addr).?);
}

test "guarded stacks mapped and unmapped beside live ones leave free slots in `where`" {
    // Counted, not timed, as the C ABI's hold-table test (zig-src/root.zig): before
    // `tidy.fetchRemoveTidy`, each unmap left a tombstone in `where`, each new mapping's insert
    // probed past them (to a free slot or its key), and 12,000 cycles beside 1,000 live stacks
    // left one free slot in 2,048: the longest walk 2,047 (now ~700 free, the longest ~27).
    if (@import("builtin").os.tag != .linux) return error.SkipZigTest;
    stack_budget_override = stacks_mapped.load(.monotonic) + 1100;
    defer stack_budget_override = null;
    var pool = try Pool.init(testing.allocator, .{ .mode = .guarded, .stack_size = min_stack_size, .max_free = 0 });
    defer pool.deinit();
    var live: [1000]Stack = undefined;
    for (&live) |*st| st.* = try pool.acquire();
    defer for (live) |st| pool.release(st);
    // A placeholder page where each unmapped stack's mapping began, so that the next stack is
    // mapped at a new address: the kernel otherwise hands the same hole back, and a key that
    // comes back takes its own tombstone again (no build-up, nothing tested).
    const holes = try testing.allocator.alloc(usize, 12_000);
    defer testing.allocator.free(holes);
    var n: usize = 0;
    defer for (holes[0..n]) |a| {
        const p: [*]align(page_size) u8 = @ptrFromInt(a);
        posix.munmap(p[0..page_size]);
    };
    for (0..holes.len) |_| {
        const s = try pool.acquire();
        pool.release(s); // max_free 0: unmapped
        const want = s.base - page_size;
        const hint: [*]align(page_size) u8 = @ptrFromInt(want);
        // NOREPLACE: a mapping another thread made there meanwhile stays; that cycle is skipped.
        const p = posix.mmap(hint, page_size, posix.PROT.NONE, .{ .TYPE = .PRIVATE, .ANONYMOUS = true, .FIXED_NOREPLACE = true }, -1, 0) catch continue;
        if (@intFromPtr(p.ptr) != want) { // a kernel without the flag took it as a hint
            posix.munmap(p);
            continue;
        }
        holes[n] = want;
        n += 1;
    }
    try testing.expect(n > holes.len / 2); // the stacks' addresses did change
    try testing.expectEqual(@as(usize, 1000), pool.where.count());
    const st = tidy.slotStats(pool.where);
    // Fewer than capacity / 2 removals since the last tidy: some slots stay free, and no walk
    // covers much of the table.
    try testing.expect(st.free > 0);
    try testing.expect(st.probe < st.cap / 8);
    for (pool.mappings.items, 0..) |m, i| try testing.expectEqual(@as(u32, @intCast(i)), pool.where.get(m.addr).?);
}

test "slab stacks share one mapping" {
    var pool = try Pool.init(testing.allocator, .{ .mode = .slab, .stack_size = 16 * 1024 });
    defer pool.deinit();
    var stacks: [1000]Stack = undefined;
    for (&stacks) |*s| s.* = try pool.acquire();
    try testing.expectEqual(@as(usize, 1), pool.mappingCount());
    try testing.expectEqual(stacks[0].top(), stacks[1].base);
    for (stacks) |s| pool.release(s);
    try testing.expectEqual(@as(usize, 1000), pool.free_count);
}

test "slab canary catches an overflow when the stack returns to the pool" {
    const pid = try posix.fork();
    if (pid == 0) {
        // Keep the expected panic message out of the test output.
        const devnull = posix.open("/dev/null", .{ .ACCMODE = .WRONLY }, 0) catch posix.exit(2);
        posix.dup2(devnull, 2) catch posix.exit(2);
        var pool = Pool.init(std.heap.page_allocator, .{ .mode = .slab, .stack_size = 16 * 1024 }) catch unreachable;
        const s = pool.acquire() catch unreachable;
        const bottom: *[canary_len]u8 = @ptrFromInt(s.base);
        bottom[3] = 0x42; // what an overflowing frame would leave behind
        pool.release(s); // panics
        posix.exit(0);
    }
    const res = try test_wait.waitChild(pid, test_wait.test_ns, "the forked child (its release should panic)");
    try testing.expect(posix.W.IFSIGNALED(res.status)); // panic aborts
}

test "rejects stack sizes out of range" {
    try testing.expectError(error.InvalidStackSize, Pool.init(testing.allocator, .{ .stack_size = 1024 }));
    try testing.expectError(error.InvalidStackSize, Pool.init(testing.allocator, .{ .stack_size = 1 << 40 }));
}

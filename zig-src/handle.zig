//! Handle tables: the only way an object is named across the C ABI and FFI boundary.
//!
//! A handle is a u32: `[kind:3][generation:9][index:20]`. Kind 0 and generation 0 never occur,
//! so 0 is never a valid handle, and a handle of one kind is rejected by a table of another.
//! A table holds up to 2^20 - 1 objects in chunks of 4096 slots that never move once allocated,
//! so a lookup is a few loads and compares and may run on any thread concurrently with `alloc`
//! and `free` (the latter two serialise on the table's mutex).
//!
//! A stale handle (its slot freed, or freed and reused) fails the generation compare. A slot's
//! generation advances on every free and skips 0; slots are reused in FIFO order, and only once
//! more than `reuse_after` (1024) slots are free (fresh slots are handed out until then, unless a
//! new chunk of them cannot be allocated), so a stale handle can alias a new object only after
//! 511 reuses of its slot, each of which waits behind at least 1024 other frees: about 523,000
//! frees of objects of its kind, where a program that makes and ends one object at a time met it
//! after 511 (a Worker's stale `Channel.from` copy then named a later channel). A forged handle
//! either fails the checks or names some live object of the right kind: it can never reach memory
//! that is not a live object.
const std = @import("std");
const assert = std.debug.assert;

pub const Handle = u32;

pub const Kind = enum(u3) {
    coroutine = 1,
    channel = 2,
    scope = 3,
    select = 4,
    token = 5,
    ring = 6,
    /// A scheduled coroutine's (coroutine: a hand-driven one's).
    task = 7,
};

pub const index_bits = 20;
/// Free slots a table keeps before it reuses one (see the header): the first 1025 slots of a
/// table cost 24 KiB, in its first chunk of 4096 slots, which is allocated whole anyway.
pub const reuse_after: u32 = 1024;
pub const gen_bits = 9;
pub const max_objects: u32 = (1 << index_bits) - 1;
const chunk_bits = 12;
const chunk_len = 1 << chunk_bits;
const chunk_count = (1 << index_bits) / chunk_len;
const gen_mask: u32 = (1 << gen_bits) - 1;
pub const index_mask: u32 = (1 << index_bits) - 1;
pub const no_slot: u32 = std.math.maxInt(u32);

comptime {
    assert(index_bits + gen_bits + 3 == 32);
    assert(chunk_len * chunk_count == 1 << index_bits);
}

pub fn encode(kind: Kind, gen: u32, index: u32) Handle {
    assert(gen != 0 and gen <= gen_mask);
    assert(index <= index_mask);
    return (@as(u32, @intFromEnum(kind)) << (index_bits + gen_bits)) | (gen << index_bits) | index;
}

/// Tests: runs inside `get` between its generation compare and its pointer load (a racing free
/// and reuse of the slot, made certain).
pub var test_mid_get: if (@import("builtin").is_test) ?*const fn () void else void =
    if (@import("builtin").is_test) null else {};

pub fn kindOf(h: Handle) u3 {
    return @intCast(h >> (index_bits + gen_bits));
}

/// Whether `h` is shaped as a handle of `kind` that a table hands out: of that kind, generation
/// and index not 0. Says nothing of whether it is live (`HandleTable.get`).
pub fn wellFormed(kind: Kind, h: Handle) bool {
    return kindOf(h) == @intFromEnum(kind) and h & index_mask != 0 and (h >> index_bits) & gen_mask != 0;
}

pub fn HandleTable(comptime T: type, comptime kind: Kind) type {
    return struct {
        const Self = @This();

        const Slot = struct {
            /// 0 while free; the slot's generation while live. Written under the mutex, read
            /// by `get` without it (acquire, pairs with the release store in `alloc`/`free`).
            live_gen: std.atomic.Value(u32) = .init(0),
            /// The generation the next object in this slot gets.
            next_gen: u32 = 1,
            /// Written under the mutex (release), read by `get` without it (acquire): see there.
            ptr: ?*T = null,
            next_free: u32 = no_slot,
        };

        allocator: std.mem.Allocator,
        mutex: std.Thread.Mutex = .{},
        /// Chunks are published with a release store and read with acquire (in `get`).
        chunks: [chunk_count]std.atomic.Value(?*[chunk_len]Slot) = @splat(.init(null)),
        /// Slots ever handed out: [1, high_water). Slot 0 is never used.
        high_water: u32 = 1,
        free_head: u32 = no_slot,
        free_tail: u32 = no_slot,
        /// Slots on the free list.
        free_count: u32 = 0,
        /// A free slot is reused only while more than this many are free (or no fresh slot is
        /// left, or its chunk cannot be allocated): `reuse_after`, lowered by tests that need a
        /// slot reused at once.
        reuse_after: u32 = reuse_after,
        /// Tests only: a slot index `allocLocked` takes whenever it is free, before the free
        /// list's order and `reuse_after`, so that a test reaches a stale handle's value again in
        /// 511 allocations (`no_slot`: none).
        prefer: u32 = no_slot,
        live: u32 = 0,

        pub fn init(allocator: std.mem.Allocator) Self {
            return .{ .allocator = allocator };
        }

        /// Frees the table's own memory. Objects are the caller's: the table must be empty.
        pub fn deinit(t: *Self) void {
            assert(t.live == 0);
            for (&t.chunks) |*c| {
                if (c.load(.monotonic)) |chunk| t.allocator.destroy(chunk);
            }
            t.* = undefined;
        }

        pub fn alloc(t: *Self, ptr: *T) error{ OutOfMemory, TooManyObjects }!Handle {
            t.mutex.lock();
            defer t.mutex.unlock();
            return t.allocLocked(ptr);
        }

        /// `alloc` for a caller whose own lock serialises every `allocLocked` and `freeLocked`
        /// of this table (the channel registry's): the table's mutex would be a second lock
        /// pair per create and destroy (~30 ns each on this project's VM).
        pub fn allocLocked(t: *Self, ptr: *T) error{ OutOfMemory, TooManyObjects }!Handle {
            var index: u32 = undefined;
            const fresh_left = t.high_water <= max_objects;
            if (t.prefer != no_slot and t.unlinkFree(t.prefer)) {
                index = t.prefer;
            } else if (t.free_head != no_slot and (t.free_count > t.reuse_after or !fresh_left)) {
                index = t.takeFree();
            } else {
                if (!fresh_left) return error.TooManyObjects;
                index = t.high_water;
                const c = index >> chunk_bits;
                if (t.chunks[c].load(.monotonic) == null) {
                    // A new chunk that cannot be had: a free slot, if any, serves (reused early).
                    const chunk = t.allocator.create([chunk_len]Slot) catch |e| {
                        if (t.free_head == no_slot) return e;
                        return t.give(t.takeFree(), ptr);
                    };
                    chunk.* = @splat(.{});
                    // Release: pairs with the acquire load in `get`, so a reader that sees the
                    // chunk sees its initialised slots.
                    t.chunks[c].store(chunk, .release);
                }
                t.high_water += 1;
            }
            return t.give(index, ptr);
        }

        /// Takes the free list's head (oldest freed); the list is not empty.
        fn takeFree(t: *Self) u32 {
            assert(t.free_count > 0);
            const index = t.free_head;
            const slot = t.slotAt(index);
            t.free_head = slot.next_free;
            if (t.free_head == no_slot) t.free_tail = no_slot;
            t.free_count -= 1;
            return index;
        }

        /// Makes free slot `index` (off the free list, or fresh) name `ptr`.
        fn give(t: *Self, index: u32, ptr: *T) Handle {
            const slot = t.slotAt(index);
            assert(slot.live_gen.load(.monotonic) == 0);
            const gen = slot.next_gen;
            assert(gen != 0);
            // Release: pairs with the acquire load in `get`, which then sees this slot's free
            // (its `live_gen` store of 0) if it saw this pointer.
            @atomicStore(?*T, &slot.ptr, ptr, .release);
            slot.next_free = no_slot;
            // Release: pairs with the acquire in `get`; a reader that sees this generation sees
            // `ptr` (and everything the caller initialised before `alloc`).
            slot.live_gen.store(gen, .release);
            t.live += 1;
            return encode(kind, gen, index);
        }

        /// Returns the object `h` names, or null if `h` is stale, freed, forged or of another
        /// kind. Any thread. Racing `free` of `h`, it returns the object or null; never, when
        /// the slot is freed and reused meanwhile, the next object in it (a seqlock's read: the
        /// generation is read again after the pointer). What the object is by then is the
        /// caller's concern (the registries check their own record of the handle).
        pub fn get(t: *Self, h: Handle) ?*T {
            if (!wellFormed(kind, h)) return null;
            const index = h & index_mask;
            const gen = (h >> index_bits) & gen_mask;
            // Acquire: pairs with `alloc`'s release store of the chunk (its slots initialised).
            const chunk = t.chunks[index >> chunk_bits].load(.acquire) orelse return null;
            const slot = &chunk[index & (chunk_len - 1)];
            // Acquire: pairs with the release stores of `live_gen` in `alloc` and `free`.
            if (slot.live_gen.load(.acquire) != gen) return null;
            if (@import("builtin").is_test) if (test_mid_get) |f| f();
            // Acquire: pairs with the release store in `alloc`. A pointer stored after a free
            // of `h`'s object makes that free's `live_gen` store visible to the load below, so
            // a slot reused between the two loads fails the second compare.
            const ptr = @atomicLoad(?*T, &slot.ptr, .acquire);
            // Monotonic: kept after the pointer's load by its acquire.
            if (slot.live_gen.load(.monotonic) != gen) return null;
            return ptr;
        }

        /// Frees `h`; returns the object it named, or null if `h` was not live.
        pub fn free(t: *Self, h: Handle) ?*T {
            t.mutex.lock();
            defer t.mutex.unlock();
            return t.freeLocked(h);
        }

        /// `free` under the caller's own lock (see `allocLocked`).
        pub fn freeLocked(t: *Self, h: Handle) ?*T {
            const ptr = t.get(h) orelse return null;
            const index = h & index_mask;
            const slot = t.slotAt(index);
            var next = (slot.next_gen + 1) & gen_mask;
            if (next == 0) next = 1;
            slot.next_gen = next;
            @atomicStore(?*T, &slot.ptr, null, .release); // see `alloc`
            // Release: pairs with the acquire in `get`; later lookups of `h` fail.
            slot.live_gen.store(0, .release);
            // FIFO reuse: append to the tail so a slot is reused as late as possible.
            if (t.free_tail == no_slot) {
                t.free_head = index;
            } else {
                t.slotAt(t.free_tail).next_free = index;
            }
            t.free_tail = index;
            t.free_count += 1;
            assert(t.live > 0);
            t.live -= 1;
            return ptr;
        }

        /// The live handle at `index`, if any (for walking a table at shutdown).
        pub fn liveHandle(t: *Self, index: u32) ?Handle {
            if (index == 0 or index >= t.high_water) return null;
            // Acquire: pairs with the release stores of `live_gen` in `alloc` and `free`.
            const gen = t.slotAt(index).live_gen.load(.acquire);
            if (gen == 0) return null;
            return encode(kind, gen, index);
        }

        /// Takes `index` off the free list if it is there (tests: `prefer`; walks the list).
        fn unlinkFree(t: *Self, index: u32) bool {
            var prev: u32 = no_slot;
            var at = t.free_head;
            while (at != no_slot) : ({
                prev = at;
                at = t.slotAt(at).next_free;
            }) {
                if (at != index) continue;
                const next = t.slotAt(at).next_free;
                if (prev == no_slot) t.free_head = next else t.slotAt(prev).next_free = next;
                if (t.free_tail == index) t.free_tail = prev;
                assert(t.free_count > 0);
                t.free_count -= 1;
                return true;
            }
            return false;
        }

        fn slotAt(t: *Self, index: u32) *Slot {
            const chunk = t.chunks[index >> chunk_bits].load(.monotonic).?;
            return &chunk[index & (chunk_len - 1)];
        }
    };
}

const testing = std.testing;

test "handles are rejected once freed, when forged, and across kinds" {
    var x: u64 = 1;
    var t = HandleTable(u64, .coroutine).init(testing.allocator);
    defer t.deinit();
    const h = try t.alloc(&x);
    try testing.expectEqual(&x, t.get(h).?);
    try testing.expect(t.get(0) == null);
    try testing.expect(t.get(0xFFFF_FFFF) == null);
    try testing.expect(t.get(h +% 1) == null); // an index never handed out
    var other = HandleTable(u64, .channel).init(testing.allocator);
    defer other.deinit();
    try testing.expect(other.get(h) == null);
    try testing.expectEqual(&x, t.free(h).?);
    try testing.expect(t.get(h) == null);
    try testing.expect(t.free(h) == null);
}

test "a reused slot gets a new generation" {
    var x: u64 = 1;
    var t = HandleTable(u64, .coroutine).init(testing.allocator);
    defer t.deinit();
    t.reuse_after = 0; // reuse at once
    const a = try t.alloc(&x);
    _ = t.free(a);
    const b = try t.alloc(&x);
    try testing.expect(a != b);
    try testing.expectEqual(a & index_mask, b & index_mask);
    try testing.expect(t.get(a) == null);
    _ = t.free(b);
}

test "generation never becomes 0 over many reuses" {
    var x: u64 = 1;
    var t = HandleTable(u64, .coroutine).init(testing.allocator);
    defer t.deinit();
    t.reuse_after = 0; // one slot, reused every time
    for (0..2000) |_| {
        const h = try t.alloc(&x);
        try testing.expect(((h >> index_bits) & gen_mask) != 0);
        _ = t.free(h);
    }
}

test "a freed slot waits behind reuse_after others: one object made and ended at a time aliases a stale handle only after 511 * 1025 frees" {
    var x: u64 = 1;
    var t = HandleTable(u64, .coroutine).init(testing.allocator);
    defer t.deinit();
    const stale = try t.alloc(&x);
    _ = t.free(stale);
    // Before, the next alloc took the same slot, and the 511th after it gave `stale`'s value.
    var n: usize = 0;
    while (true) : (n += 1) {
        const h = try t.alloc(&x);
        defer _ = t.free(h);
        if (h == stale) break;
        if (n < reuse_after) try testing.expect(h & index_mask != stale & index_mask);
        try testing.expect(t.get(stale) == null or h == stale);
    }
    try testing.expectEqual(@as(usize, 511 * (reuse_after + 1)), n + 1);
    try testing.expectEqual(@as(u32, reuse_after + 2), t.high_water); // slots 1 to 1025
}

test "a preferred slot is taken whenever it is free, from anywhere in the free list" {
    var x: u64 = 1;
    var t = HandleTable(u64, .coroutine).init(testing.allocator);
    defer t.deinit();
    var hs: [4]Handle = undefined;
    for (&hs) |*h| h.* = try t.alloc(&x);
    for (hs) |h| _ = t.free(h); // free list: 1 2 3 4
    t.prefer = hs[2] & index_mask;
    const a = try t.alloc(&x); // from the middle
    try testing.expectEqual(hs[2] & index_mask, a & index_mask);
    try testing.expectEqual(@as(u32, 3), t.free_count);
    _ = t.free(a); // free list: 1 2 4 3 (the tail)
    t.prefer = hs[2] & index_mask;
    const b = try t.alloc(&x); // from the tail
    try testing.expectEqual(hs[2] & index_mask, b & index_mask);
    t.prefer = no_slot;
    const c = try t.alloc(&x); // not reused yet (3 free): a fresh slot
    try testing.expectEqual(@as(u32, 5), c & index_mask);
    _ = t.free(b);
    _ = t.free(c);
    try testing.expectEqual(@as(u32, 5), t.free_count);
}

test "a table that cannot allocate its next chunk reuses a free slot rather than failing" {
    // Fresh slots come first while few are free; a fresh slot past the first chunk needs a new
    // chunk. When that allocation fails a free slot is still there to give, as before fresh
    // slots were preferred: kc_chan_create must not answer KC_ENOMEM with slots free.
    var x: u64 = 1;
    var failing = std.testing.FailingAllocator.init(testing.allocator, .{ .fail_index = 1 });
    var t = HandleTable(u64, .coroutine).init(failing.allocator());
    defer t.deinit();
    var hs: [chunk_len - 1]Handle = undefined; // slots 1 to 4095: the first chunk, full
    for (&hs) |*h| h.* = try t.alloc(&x);
    defer for (hs[1..]) |h| {
        _ = t.free(h);
    };
    _ = t.free(hs[0]);
    const again = try t.alloc(&x); // the second chunk cannot be had: slot 1 again
    try testing.expectEqual(hs[0] & index_mask, again & index_mask);
    try testing.expect(again != hs[0]);
    _ = t.free(again);
}

test "a stale handle whose slot is freed and reused during its lookup does not find the new object" {
    var old_obj: u64 = 1;
    var new_obj: u64 = 2;
    const S = struct {
        var t: HandleTable(u64, .coroutine) = undefined;
        var stale: Handle = 0;
        var reused: Handle = 0;
        var new_ptr: *u64 = undefined;
        fn reuse() void {
            test_mid_get = null; // once
            _ = t.free(stale).?;
            reused = t.alloc(new_ptr) catch unreachable; // the same slot: the only free one
        }
    };
    S.t = .init(testing.allocator);
    defer S.t.deinit();
    S.t.reuse_after = 0; // the freed slot is the next one given
    S.new_ptr = &new_obj;
    S.stale = try S.t.alloc(&old_obj);
    test_mid_get = S.reuse;
    defer test_mid_get = null;
    const got = S.t.get(S.stale);
    defer _ = S.t.free(S.reused);
    try testing.expectEqual(S.stale & index_mask, S.reused & index_mask);
    try testing.expect(got == null or got.? == &old_obj);
    try testing.expectEqual(&new_obj, S.t.get(S.reused).?);
}

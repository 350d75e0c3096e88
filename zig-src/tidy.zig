//! `removeTidy`: a removal from a std hash map that keeps tombstones from building up, shared by
//! the C ABI's maps (zig-src/root.zig: a thread's holds, keeps, coroutines, scopes; the kept
//! undelivered queues), the guarded stack pool's `where` (zig-src/coro/stack.zig) and the live
//! cells blocks (root.zig, `cells_registry`).
const std = @import("std");

/// Removes `key` from `map` (a `std.HashMapUnmanaged` with the auto context of `key`'s type),
/// counting the removal in `removed`, and tidies the map: emptied, its slots are cleared; else
/// once the removals since its last tidy reach half its slots that hold no entry, it is rehashed
/// in place. Why:
/// std's hash map leaves a tombstone per removal, an insert reuses one only on its own probe
/// path, and the look-up of an absent key (each new hold: a handle value names a new channel each
/// time; each new stack mapping or cells block: a new address) probes until it meets a free slot.
/// A thread that keeps holds alive (1,000 shared channels) while others come and go turned every
/// free slot into a tombstone, and each kc_chan_hold then walked the whole table (2,048 slots:
/// `share()` + dispose of a channel went 2 -> 9 us). A rehash is O(capacity) once per
/// (capacity - count) / 2 removals, at least capacity / 10 (the load is at most 80%): O(1) a
/// removal, amortised. The removed entry's value (if it was there).
pub fn fetchRemoveTidy(map: anytype, removed: *u32, key: anytype) ?std.meta.Child(@TypeOf(map)).KV {
    return fetchRemoveTidyContext(map, removed, key, std.hash_map.AutoContext(@TypeOf(key)){});
}

/// `fetchRemoveTidy` for a map of a context of its own (`ctx`, zero-sized: the map's calls take
/// it as given).
pub fn fetchRemoveTidyContext(map: anytype, removed: *u32, key: anytype, ctx: anytype) ?std.meta.Child(@TypeOf(map)).KV {
    const kv = map.fetchRemove(key) orelse return null;
    if (map.count() == 0) {
        map.clearRetainingCapacity(); // every slot free again, at a memset's cost
        removed.* = 0;
        return kv;
    }
    removed.* += 1;
    // Half the slots no entry holds: at most that many tombstones, so at least half of those
    // slots stay free however full the map is (std lets it reach 80% before it grows, and
    // counts a tombstone as room: a map 78% full had none free after capacity / 2 removals).
    if (removed.* >= (map.capacity() - map.count()) / 2) {
        map.rehash(ctx);
        removed.* = 0;
    }
    return kv;
}

/// `fetchRemoveTidy` without the value: true if `key` was there.
pub fn removeTidy(map: anytype, removed: *u32, key: anytype) bool {
    return fetchRemoveTidy(map, removed, key) != null;
}

/// Free slots in `map` and the longest walk from any slot to a free one (what the look-up of an
/// absent key probes at most): for tests that check a map's tidiness after churn.
pub fn slotStats(map: anytype) struct { free: usize, probe: usize, cap: usize } {
    const cap = map.capacity();
    if (cap == 0) return .{ .free = 0, .probe = 0, .cap = 0 };
    const md: [*]const u8 = @ptrCast(map.metadata.?);
    var free: usize = 0;
    var probe: usize = 0;
    // A free slot's metadata is 0 (a used one's has its top bit set, a tombstone's is 1).
    for (0..cap) |i| {
        if (md[i] == 0) free += 1;
        var n: usize = 0;
        while (n < cap and md[(i + n) % cap] != 0) n += 1;
        probe = @max(probe, n);
    }
    return .{ .free = free, .probe = probe, .cap = cap };
}

test "a map near std's 80% load churned with new keys keeps at least half its slots that no entry holds free" {
    // Counted, not timed. 100 entries in 128 slots leave 28 that no entry holds: a tidy after
    // capacity / 2 (64) removals, as removeTidy did before, let tombstones take all 28 (the
    // look-up of an absent key then walked the whole table); after (capacity - count) / 2 (14)
    // at most half of them are tombstones, so the other half stay free.
    const testing = std.testing;
    var map: std.AutoHashMapUnmanaged(u32, void) = .empty;
    defer map.deinit(testing.allocator);
    var removed: u32 = 0;
    for (0..100) |k| try map.put(testing.allocator, @intCast(k), {});
    try testing.expectEqual(@as(u32, 128), map.capacity());
    var min_free: usize = map.capacity();
    for (100..3_100) |k| {
        try testing.expect(removeTidy(&map, &removed, @as(u32, @intCast(k - 100)))); // the oldest
        try map.put(testing.allocator, @intCast(k), {}); // a new key: into a free slot or a tombstone
        const md: [*]const u8 = @ptrCast(map.metadata.?);
        var free: usize = 0;
        for (0..map.capacity()) |i| free += @intFromBool(md[i] == 0);
        min_free = @min(min_free, free);
    }
    try testing.expectEqual(@as(u32, 128), map.capacity()); // never grown: tombstones count as room
    // At every step (a walk's length at this load is the clustering's, not the tombstones').
    try testing.expect(2 * min_free >= map.capacity() - map.count());
}

//! The immutable context a coroutine carries: a persistent key/value map, inherited at spawn.
//!
//! - Built-in keys (dispatcher, job, cancellation, deadline) live in fixed fields of every node:
//!   constant-time lookup, copied on every `with`.
//! - Other keys: up to `small_max` entries inline in a node (the small-array form). A `with` on a
//!   node that still has room copies its entries into a new node (flat, no chain). A `with` on a
//!   full node makes a node with just the new entry whose `parent` is the full node: structural
//!   sharing, the old map is not copied. Lookups walk at most one node per `small_max` keys.
//! - `without` of a key stored further up the chain adds a tombstone that shadows it.
//!
//! Nodes are reference counted (atomic) and never change after creation, so a context can be
//! shared by any number of coroutines on any threads. `with`/`without` return a new reference;
//! the caller releases every reference it holds. `empty` is static and never freed.
//! Size of a node: 168 bytes on 64-bit targets.
const std = @import("std");
const assert = std.debug.assert;

pub const Key = u32;
pub const Value = usize;

/// Built-in keys. Their values are opaque words chosen by the runtime layers that set them.
pub const dispatcher: Key = 0;
pub const job: Key = 1;
pub const cancellation: Key = 2;
pub const deadline: Key = 3;
const builtin_count = 4;

/// User keys start here; `newKey` hands them out.
pub const first_user_key: Key = 16;
var next_key: std.atomic.Value(Key) = .init(first_user_key);

/// A fresh key, distinct from every other key in the process. Any thread.
pub fn newKey() Key {
    return next_key.fetchAdd(1, .monotonic);
}

pub const small_max = 8;
const tombstone: Value = std.math.maxInt(Value);

const Entry = struct { key: Key, value: Value };

pub const Context = struct {
    /// Atomic count of references; the static `empty` node has none and is never freed.
    refs: std.atomic.Value(u32),
    allocator: std.mem.Allocator,
    parent: ?*Context,
    /// Bit i set: built-in key i has a value here.
    builtin_set: u8,
    count: u8,
    builtins: [builtin_count]Value,
    entries: [small_max]Entry,

    pub fn retain(c: *Context) *Context {
        if (c == empty) return c;
        // Monotonic: taking another reference needs no ordering (we already hold one).
        const prev = c.refs.fetchAdd(1, .monotonic);
        assert(prev > 0);
        return c;
    }

    pub fn release(c: *Context) void {
        var node: ?*Context = c;
        while (node) |n| {
            if (n == empty) return;
            // Acq_rel: the last releaser must see every other holder's reads completed
            // (release) before it frees the node (acquire).
            const prev = n.refs.fetchSub(1, .acq_rel);
            assert(prev > 0);
            if (prev != 1) return;
            node = n.parent;
            n.allocator.destroy(n);
        }
    }

    /// The value of `key`, or null if the context has none.
    pub fn get(c: *const Context, key: Key) ?Value {
        if (key < builtin_count) {
            if (c.builtin_set & (@as(u8, 1) << @intCast(key)) == 0) return null;
            return c.builtins[key];
        }
        var node: ?*const Context = c;
        while (node) |n| : (node = n.parent) {
            for (n.entries[0..n.count]) |e| {
                if (e.key == key) return if (e.value == tombstone) null else e.value;
            }
        }
        return null;
    }

    /// A new context equal to `c` with `key` set to `value` (shadowing any older value).
    pub fn with(c: *Context, allocator: std.mem.Allocator, key: Key, value: Value) error{ OutOfMemory, InvalidArgument }!*Context {
        if (value == tombstone) return error.InvalidArgument; // reserved
        if (key >= builtin_count and key < first_user_key) return error.InvalidArgument;
        return c.derive(allocator, key, value);
    }

    /// A new context equal to `c` without `key`.
    pub fn without(c: *Context, allocator: std.mem.Allocator, key: Key) error{OutOfMemory}!*Context {
        if (c.get(key) == null) return c.retain();
        return c.derive(allocator, key, tombstone) catch |e| switch (e) {
            error.OutOfMemory => error.OutOfMemory,
            error.InvalidArgument => unreachable, // tombstone is allowed here
        };
    }

    fn derive(c: *Context, allocator: std.mem.Allocator, key: Key, value: Value) error{ OutOfMemory, InvalidArgument }!*Context {
        const n = try allocator.create(Context);
        n.* = .{
            .refs = .init(1),
            .allocator = allocator,
            .parent = null,
            .builtin_set = c.builtin_set,
            .count = 0,
            .builtins = c.builtins,
            .entries = undefined,
        };
        if (key < builtin_count) {
            const bit = @as(u8, 1) << @intCast(key);
            if (value == tombstone) n.builtin_set &= ~bit else n.builtin_set |= bit;
            n.builtins[key] = if (value == tombstone) 0 else value;
            // User entries unchanged: share them.
            n.parent = if (c.count > 0 or c.parent != null) c.retain() else null;
            return n;
        }
        // Replace in place if this node holds the key; else append if there is room; else chain.
        for (c.entries[0..c.count], 0..) |e, i| {
            if (e.key == key) {
                n.entries = c.entries;
                n.count = c.count;
                n.entries[i].value = value;
                n.parent = if (c.parent) |p| p.retain() else null;
                return n;
            }
        }
        if (c.count < small_max) {
            n.entries = c.entries;
            n.count = c.count + 1;
            n.entries[c.count] = .{ .key = key, .value = value };
            n.parent = if (c.parent) |p| p.retain() else null;
        } else {
            n.count = 1;
            n.entries[0] = .{ .key = key, .value = value };
            n.parent = c.retain();
        }
        return n;
    }

    /// Nodes a lookup of a user key may visit (for tests and diagnostics).
    pub fn depth(c: *const Context) usize {
        var d: usize = 0;
        var node: ?*const Context = c;
        while (node) |n| : (node = n.parent) d += 1;
        return d;
    }
};

var empty_node: Context = .{
    .refs = .init(0),
    .allocator = undefined,
    .parent = null,
    .builtin_set = 0,
    .count = 0,
    .builtins = @splat(0),
    .entries = undefined,
};

/// The empty context (static; retain/release are no-ops on it).
pub const empty: *Context = &empty_node;

const testing = std.testing;

test "with, get, shadowing, without" {
    const a = testing.allocator;
    const k1 = newKey();
    const k2 = newKey();
    const c1 = try empty.with(a, k1, 10);
    defer c1.release();
    const c2 = try c1.with(a, k2, 20);
    defer c2.release();
    const c3 = try c2.with(a, k1, 11); // shadows k1
    defer c3.release();
    try testing.expectEqual(@as(?Value, 10), c1.get(k1));
    try testing.expectEqual(@as(?Value, null), c1.get(k2)); // c1 unchanged: immutable
    try testing.expectEqual(@as(?Value, 11), c3.get(k1));
    try testing.expectEqual(@as(?Value, 20), c3.get(k2));
    const c4 = try c3.without(a, k1);
    defer c4.release();
    try testing.expectEqual(@as(?Value, null), c4.get(k1));
    try testing.expectEqual(@as(?Value, 11), c3.get(k1));
    const same = try c4.without(a, k1); // absent: the same context back
    defer same.release();
    try testing.expectEqual(c4, same);
}

test "built-in keys are constant-time fields and inherited by every derived context" {
    const a = testing.allocator;
    const c1 = try empty.with(a, job, 0x1000);
    defer c1.release();
    const c2 = try c1.with(a, deadline, 42);
    defer c2.release();
    var c = c2.retain();
    for (0..40) |_| {
        const next = try c.with(a, newKey(), 1);
        c.release();
        c = next;
    }
    defer c.release();
    try testing.expectEqual(@as(?Value, 0x1000), c.get(job));
    try testing.expectEqual(@as(?Value, 42), c.get(deadline));
    try testing.expectEqual(@as(?Value, null), c.get(cancellation));
    try testing.expectError(error.InvalidArgument, c.with(a, 5, 1)); // reserved key range
    const nojob = try c.without(a, job);
    defer nojob.release();
    try testing.expectEqual(@as(?Value, null), nojob.get(job));
    try testing.expectEqual(@as(?Value, 42), nojob.get(deadline));
}

test "small-array form up to small_max keys, then structural sharing" {
    const a = testing.allocator;
    var keys: [20]Key = undefined;
    for (&keys) |*k| k.* = newKey();
    var c = empty;
    for (keys, 0..) |k, i| {
        const next = try c.with(a, k, i);
        c.release();
        c = next;
        if (i < small_max) try testing.expectEqual(@as(usize, 1), c.depth()); // flat
    }
    defer c.release();
    try testing.expect(c.depth() <= 1 + keys.len / small_max + 1);
    for (keys, 0..) |k, i| try testing.expectEqual(@as(?Value, i), c.get(k));
}

test "shared contexts are freed exactly when the last reference goes" {
    const a = testing.allocator; // fails the test on a leak or a double free
    const k = newKey();
    var base = try empty.with(a, k, 1);
    for (0..small_max - 1) |i| { // fill the node, so children share it instead of copying
        const next = try base.with(a, newKey(), i);
        base.release();
        base = next;
    }
    var children: [10]*Context = undefined;
    for (&children, 0..) |*ch, i| ch.* = try base.with(a, newKey(), i);
    base.release(); // the children keep it alive
    for (children) |ch| {
        try testing.expectEqual(base, ch.parent.?);
        try testing.expectEqual(@as(?Value, 1), ch.get(k));
    }
    for (children) |ch| ch.release();
}

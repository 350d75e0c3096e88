//! A cancellation token: a one-way flag plus the list of parties to tell when it flips.
//!
//! A blocking operation (channel send/receive, select) that takes a token registers a `Link`
//! while it waits; `cancel` fires every registered link once, under the token's lock, so a link
//! can never be fired after `unregister` returned. A token can be the child of another: cancelling
//! the parent cancels the child (native scopes build trees of these). Size: one mutex, one flag,
//! one list head (plus one link when it has a parent).
//!
//! Any thread or coroutine may call any function here. The lock is held only for list edits and
//! for firing links, which must not block (a waiter's link sets a word and wakes it).
const std = @import("std");
const assert = std.debug.assert;

/// One party registered on a token. Lives in the registered party's memory (a waiter's stack
/// frame, a child token); the token only touches it between `register` and `unregister`.
pub const Link = struct {
    next: ?*Link = null,
    prev: ?*Link = null,
    linked: bool = false,
    /// Called once, under the token's lock, when the token is cancelled while linked. Must
    /// not block and must not call back into this token.
    fire: *const fn (*Link) void,
};

pub const Token = struct {
    mutex: std.Thread.Mutex = .{},
    /// Set once by `cancel` (release, under the lock: pairs with the acquire in `isCancelled`,
    /// so whoever sees true also sees what the canceller wrote before cancelling).
    cancelled: std.atomic.Value(bool) = .init(false),
    head: ?*Link = null,
    /// Set for a child token: the parent it is registered on.
    parent: ?*Token = null,
    parent_link: Link = .{ .fire = fireChild },
    /// While `cancel` walks down the tree of child tokens: the token it came from (whose lock it
    /// holds, as it holds this one's). Written and read only with both locks held.
    walk_up: ?*Token = null,

    /// A token with no parent.
    pub const init: Token = .{};

    /// Makes `t` a child of `parent`: cancelling `parent` cancels `t` (at once if `parent` is
    /// cancelled already). `parent` must outlive `t`, or `t.deinit()` must run first.
    pub fn initChild(t: *Token, parent: *Token) void {
        t.* = .{ .parent = parent };
        if (!parent.register(&t.parent_link)) _ = t.cancel();
    }

    /// Detaches a child from its parent. The token must have no registered links left.
    pub fn deinit(t: *Token) void {
        assert(t.head == null); // a waiter still registered
        if (t.parent) |p| p.unregister(&t.parent_link);
        t.* = undefined;
    }

    /// True once `cancel` ran (on this token or, for a child, on an ancestor).
    pub fn isCancelled(t: *const Token) bool {
        // Acquire: pairs with the release store in `cancel`.
        return t.cancelled.load(.acquire);
    }

    /// Flips the token and fires every registered link; true the first time only.
    pub fn cancel(t: *Token) bool {
        t.mutex.lock();
        // Monotonic: written only under the token's lock, which we hold.
        if (t.cancelled.load(.monotonic)) {
            t.mutex.unlock();
            return false;
        }
        t.cancelled.store(true, .release); // pairs with `isCancelled`'s acquire
        // Child tokens are cancelled by walking down the tree, not by recursing: a chain of
        // nested scopes thousands deep overflowed a coroutine's stack (Debug: ~300 levels on
        // 64 KiB). The locks are taken as the recursion took them, parent then child, each held
        // until everything below it is cancelled, so a child cannot unregister (and be freed)
        // while the walk is at or below it.
        t.walk_up = null;
        var cur = t;
        while (true) {
            if (cur.head) |l| {
                cur.remove(l);
                if (l.fire == &fireChild) {
                    const child: *Token = @fieldParentPtr("parent_link", l);
                    child.mutex.lock();
                    // Monotonic: under the child's lock, as in `cancel`.
                    if (child.cancelled.load(.monotonic)) {
                        child.mutex.unlock();
                        continue;
                    }
                    child.cancelled.store(true, .release); // pairs with `isCancelled`'s acquire
                    child.walk_up = cur;
                    cur = child;
                } else l.fire(l);
                continue;
            }
            const up = cur.walk_up;
            cur.mutex.unlock();
            cur = up orelse return true;
        }
    }

    /// Links `l` so that `cancel` fires it; false (and `l` stays unlinked) if the token is
    /// cancelled already.
    pub fn register(t: *Token, l: *Link) bool {
        assert(!l.linked);
        t.mutex.lock();
        defer t.mutex.unlock();
        // Monotonic: under the token's lock, as in `cancel`.
        if (t.cancelled.load(.monotonic)) return false;
        l.prev = null;
        l.next = t.head;
        if (t.head) |h| h.prev = l;
        t.head = l;
        l.linked = true;
        return true;
    }

    /// Unlinks `l` if `cancel` has not fired it; after this returns, `l` is never touched again.
    pub fn unregister(t: *Token, l: *Link) void {
        t.mutex.lock();
        defer t.mutex.unlock();
        if (l.linked) t.remove(l);
    }

    fn remove(t: *Token, l: *Link) void {
        assert(l.linked);
        if (l.prev) |p| p.next = l.next else t.head = l.next;
        if (l.next) |n| n.prev = l.prev;
        l.next = null;
        l.prev = null;
        l.linked = false;
    }

    /// A child token's link on its parent. `cancel` walks to the child itself; this runs only
    /// if something else fires the link.
    fn fireChild(l: *Link) void {
        const child: *Token = @fieldParentPtr("parent_link", l);
        _ = child.cancel(); // parent's lock held: lock order is always parent, then child
    }
};

const testing = std.testing;

test "cancel fires every registered link once and is true once" {
    const Counter = struct {
        link: Link = .{ .fire = fire },
        fired: u32 = 0,
        fn fire(l: *Link) void {
            const c: *@This() = @fieldParentPtr("link", l);
            c.fired += 1;
        }
    };
    var t: Token = .init;
    var a: Counter = .{};
    var b: Counter = .{};
    var c: Counter = .{};
    try testing.expect(t.register(&a.link));
    try testing.expect(t.register(&b.link));
    try testing.expect(t.register(&c.link));
    t.unregister(&b.link);
    try testing.expect(!t.isCancelled());
    try testing.expect(t.cancel());
    try testing.expect(!t.cancel());
    try testing.expect(t.isCancelled());
    try testing.expectEqual(@as(u32, 1), a.fired);
    try testing.expectEqual(@as(u32, 0), b.fired);
    try testing.expectEqual(@as(u32, 1), c.fired);
    t.unregister(&a.link); // fired links are unlinked already: a no-op
    var d: Counter = .{};
    try testing.expect(!t.register(&d.link)); // too late
    try testing.expect(!d.link.linked);
}

test "a child is cancelled with its parent, and at once under a cancelled parent" {
    var parent: Token = .init;
    var child: Token = undefined;
    child.initChild(&parent);
    var grandchild: Token = undefined;
    grandchild.initChild(&child);
    try testing.expect(!grandchild.isCancelled());
    try testing.expect(parent.cancel());
    try testing.expect(child.isCancelled());
    try testing.expect(grandchild.isCancelled());
    var late: Token = undefined;
    late.initChild(&parent);
    try testing.expect(late.isCancelled());
    late.deinit();
    grandchild.deinit();
    child.deinit();
    // A child detached before its parent is cancelled stays alive.
    var p2: Token = .init;
    var c2: Token = undefined;
    c2.initChild(&p2);
    c2.deinit();
    try testing.expect(p2.cancel());
    try testing.expect(p2.head == null);
}

test "cancelling a chain of thousands of nested tokens from a coroutine's 64 KiB stack (it recursed)" {
    const coroutine = @import("../coro/coroutine.zig");
    const stack_mod = @import("../coro/stack.zig");
    const n = 5000; // overflowed in ReleaseFast past ~4,000 levels, in Debug past ~300
    const S = struct {
        var tokens: [n]Token = undefined;
        var waiter_fired: u32 = 0;
        var waiter: Link = .{ .fire = fire };
        fn fire(_: *Link) void {
            waiter_fired += 1;
        }
        fn body(_: ?*anyopaque) callconv(.c) void {
            _ = tokens[0].cancel();
        }
    };
    S.tokens[0] = .init;
    for (1..n) |i| S.tokens[i].initChild(&S.tokens[i - 1]);
    try testing.expect(S.tokens[n - 1].register(&S.waiter)); // a waiter at the bottom
    var pool = try stack_mod.Pool.init(testing.allocator, .{ .stack_size = 64 * 1024 });
    defer pool.deinit();
    const st = try pool.acquire();
    defer pool.release(st);
    const co = coroutine.Coroutine.create(st, S.body, null, .{});
    _ = try co.@"resume"();
    for (&S.tokens) |*t| try testing.expect(t.isCancelled());
    try testing.expectEqual(@as(u32, 1), S.waiter_fired);
    var i: usize = n;
    while (i > 0) {
        i -= 1;
        S.tokens[i].deinit();
    }
}

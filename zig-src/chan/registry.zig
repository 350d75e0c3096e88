//! Channels and cancellation tokens named by handles, for the C ABI: lookups that cannot race a
//! destroy.
//!
//! Each live object sits in an `Entry` with a reference count: one for the handle table, one
//! for every operation in progress (including a blocked send or receive). `destroy` frees the
//! handle first (new lookups fail), retires the object (a channel is cancelled: blocked
//! operations wake with `Cancelled` and drop their references) and drops the table's
//! reference; the object is freed when the last reference goes. Entries are never freed while
//! the registry lives, only recycled, so a lookup that raced a destroy touches valid memory: it
//! fails to take a reference from a count of 0, or finds that the entry now belongs to another
//! handle.
const std = @import("std");
const test_wait = @import("../test_wait.zig");
const assert = std.debug.assert;
const handle_mod = @import("../handle.zig");
const channel = @import("channel.zig");

const Channel = channel.Channel;
pub const Handle = handle_mod.Handle;

fn freeChannel(ch: *Channel, _: std.mem.Allocator) void {
    ch.retire(); // the memory stays with the entry (see `Registry`)
}

fn retireChannel(ch: *Channel) void {
    _ = ch.cancel();
    // After the cancel's drops, under the table's reference: a drop by a call that looked the
    // channel up before the destroy and comes after it finds the hook sealed (`Channel.seal`).
    _ = ch.seal();
}

/// Tests: run by a channel's destroy once its handle died, before the retire (to make a race's
/// window certain).
pub var test_after_free: if (@import("builtin").is_test) ?*const fn () void else void =
    if (@import("builtin").is_test) null else {};

/// Tests: run by `acquire` after its lookup found the entry, before its look at the count
/// (`.found`), and after it took a reference, before its check of the entry's handle
/// (`.counted`): a destroy and recycle of the entry in between, made certain.
pub var test_mid_acquire: if (@import("builtin").is_test) ?*const fn (AcquireStage) void else void =
    if (@import("builtin").is_test) null else {};

pub const AcquireStage = enum { found, counted };

fn freeToken(t: *channel.Token, allocator: std.mem.Allocator) void {
    allocator.destroy(t);
}

fn retireToken(_: *channel.Token) void {}

/// Channels by handle: `destroy` cancels the channel (blocked operations fail with
/// `Cancelled`, buffered values go to the undelivered hook) and retires it once unused. A
/// channel's memory stays with its entry and is re-initialised in place for the entry's next
/// channel, so a try-operation may use a channel without taking a reference (it checks the
/// entry's handle under the channel lock: `Channel.tryGuarded`).
pub const Registry = RefRegistry(Channel, .channel, freeChannel, retireChannel);

/// Cancellation tokens by handle: `destroy` frees the token once no operation waits on it (it
/// does not cancel it).
pub const TokenRegistry = RefRegistry(channel.Token, .token, freeToken, retireToken);

const Ring = @import("../bridge/ring.zig").Ring;

/// Frees a ring its last reference let go of. That may be a call on the ring from inside an
/// undelivered hook (or a descriptor's release) on this thread, after another thread destroyed
/// the ring meanwhile: if one of the ring's operations is on the hook's channel (or on the
/// channel of a hook further out: `Ring.refuseInHook`), `deinit`'s withdrawal would take that
/// channel's lock, which this thread holds, and wait for itself for good (it did, before). Then
/// the free goes to a thread of its own (`startFreer`), which takes the lock once the hook's
/// caller let go of it; only if no thread can be started does it run here, as before (kcoro.h,
/// kc_ring_destroy). The ring's handle is dead already, and the ring's operations keep their
/// channels alive.
fn freeRing(r: *Ring, allocator: std.mem.Allocator) void {
    if (r.refuseInHook()) |_| {} else |_| if (startFreer(r, allocator)) return;
    freeRingNow(r, allocator);
}

fn freeRingNow(r: *Ring, allocator: std.mem.Allocator) void {
    r.deinit();
    allocator.destroy(r);
}

/// A thread `freeRing` started. Joined, never detached (`joinRingFreers`): before, it was
/// detached, and nothing waited for it, so it could still run the library's code (the ring's
/// withdrawals, a hook its dropped sends reach) after the shutdown that promises no thread of
/// the library's own outlives its last host, and, in the tests, into a later test's fork.
const Freer = struct {
    thread: std.Thread = undefined,
    ring: *Ring,
    allocator: std.mem.Allocator,
    /// Set once the free is done; release: pairs with `joinRingFreers`' acquire load (a thread
    /// seen done holds nothing and runs no more of our work: its join waits only for its exit).
    done: std.atomic.Value(bool) = .init(false),
    /// Joined already, by `ended` (under `freers_mutex`).
    joined: bool = false,
    next: ?*Freer = null,
};

/// glibc's and musl's: joins a thread that has ended, else answers EBUSY at once.
extern "c" fn pthread_tryjoin_np(thread: std.c.pthread_t, retval: ?*?*anyopaque) c_int;
const can_tryjoin = @import("builtin").os.tag == .linux and @import("builtin").link_libc;

/// `f`, done, has ended too (joined now, where the C library can tell without waiting). Past
/// `done` its thread still runs its exit: the thread-key destructors (a record its hook made,
/// `ThreadRecord.threadEnded`: holds given back, which can destroy a channel and run its hook,
/// a last host's shutdown bounded at 2 s), so that kc_ring_create's join waited for all of it,
/// for good if that hook waited for its caller. Elsewhere: true, the join waiting for it.
fn ended(f: *Freer) bool {
    if (!can_tryjoin) return true;
    if (pthread_tryjoin_np(f.thread.getHandle(), null) != 0) return false;
    f.joined = true;
    return true;
}

/// The `Freer`s not joined yet, under `freers_mutex`; `freers_listed` counts them, for a look
/// without the mutex (`reapRingFreers`).
var freers: ?*Freer = null;
var freers_mutex: std.Thread.Mutex = .{};
var freers_listed: std.atomic.Value(usize) = .init(0);

/// Starts `r`'s free on a thread of its own, listed for `joinRingFreers`. False: no memory or no
/// thread (the caller frees it itself). Joins none here, inside a hook: even a finished one's
/// exit runs the thread's key destructors (a hold its hook took, given back, may take a lock
/// this thread holds); `reapRingFreers` does, outside hooks.
fn startFreer(r: *Ring, allocator: std.mem.Allocator) bool {
    const f = std.heap.c_allocator.create(Freer) catch return false;
    f.* = .{ .ring = r, .allocator = allocator };
    // Spawned under the mutex: `thread` is set before a join can find `f` listed.
    freers_mutex.lock();
    defer freers_mutex.unlock();
    f.thread = std.Thread.spawn(.{}, freerMain, .{f}) catch {
        std.heap.c_allocator.destroy(f);
        return false;
    };
    f.next = freers;
    freers = f;
    // Monotonic: a hint for `reapRingFreers`; the list itself is read under the mutex.
    _ = freers_listed.fetchAdd(1, .monotonic);
    return true;
}

/// This thread is one `startFreer` started: it joins none of them (`joinRingFreers`).
threadlocal var on_freer: bool = false;

fn freerMain(f: *Freer) void {
    on_freer = true;
    freeRingNow(f.ring, f.allocator);
    // Release: pairs with `joinRingFreers`' acquire load.
    f.done.store(true, .release);
}

/// Joins the threads `freeRing` started: `.finished` only those done and ended (`ended`: on
/// Linux no wait at all; elsewhere a wait for their exits), `.all` every one, each once its free is
/// done, which takes the locks of the ring's channels: never call that with one of them held (from
/// inside an undelivered hook: the root's shutdown skips it there). The library's untimed shutdown
/// calls `.all` where it ends its other threads of its own (root.zig, `stopUnusedThreads`); a timed
/// one `joinRingFreersBy`.
pub fn joinRingFreers(which: enum { finished, all }) void {
    // Never from a free's thread: its exit can come here (a host its hook took, counted out
    // there, the last one's shutdown joining these), and it stays listed, so that two of them
    // there each joined the other for good (the first's `.all` took the second, still freeing;
    // the second's exit, whose count-out was the last again, took the first, left listed).
    // Nor itself (glibc's EDEADLK, `unreachable` in `join`). They stay listed for a later
    // kc_ring_create's or shutdown's join.
    if (on_freer) return;
    var list: ?*Freer = null;
    {
        freers_mutex.lock();
        defer freers_mutex.unlock();
        var link: *?*Freer = &freers;
        while (link.*) |f| {
            std.debug.assert(f.thread.getHandle() != std.c.pthread_self()); // `on_freer`
            // Acquire: pairs with `freerMain`'s release store.
            if (which == .all or (f.done.load(.acquire) and ended(f))) {
                link.* = f.next;
                f.next = list;
                list = f;
                _ = freers_listed.fetchSub(1, .monotonic); // monotonic: as in `startFreer`
            } else link = &f.next;
        }
    }
    while (list) |f| {
        list = f.next;
        if (!f.joined) f.thread.join();
        std.heap.c_allocator.destroy(f);
    }
}

/// `joinRingFreers(.finished)` again and again until none is listed or `now()` reaches
/// `deadline_ns`, those still freeing (waiting for a channel lock an undelivered hook's caller
/// holds, for as long as that hook runs) left listed for a later kc_ring_create's or untimed
/// shutdown's join: a timed shutdown's (root.zig, `stopUnusedThreads`), bounded by its deadline.
/// Before, that shutdown joined them all (`.all`), with no bound: past its deadline for as long
/// as a stuck hook held the lock. On Linux no join waits (`ended`); elsewhere a done one's join
/// waits for its exit, as kc_ring_create's.
pub fn joinRingFreersBy(deadline_ns: u64, comptime now: fn () u64) void {
    if (on_freer) return; // as in `joinRingFreers`, which would join none: no polling either
    const poll_ns = std.time.ns_per_ms;
    while (true) {
        joinRingFreers(.finished);
        // Monotonic: a hint, as in `reapRingFreers` (one listed meanwhile waits at most until
        // the deadline, or for a later join).
        if (freers_listed.load(.monotonic) == 0) return;
        const t = now();
        if (t >= deadline_ns) return;
        std.Thread.sleep(@min(deadline_ns - t, poll_ns));
    }
}

/// Joins the `freeRing` threads that are done, if any are listed: so that their stacks do not
/// pile up until a shutdown. Not from inside a hook (see `startFreer`): kc_ring_create's. On
/// Linux only those that have ended: it never waits for a thread's exit (`ended`).
pub fn reapRingFreers() void {
    // Monotonic: a hint (one listed meanwhile is the next call's).
    if (freers_listed.load(.monotonic) != 0) joinRingFreers(.finished);
}

/// Tests: how many `freeRing` threads are not joined yet.
pub fn ringFreersLeft() usize {
    freers_mutex.lock();
    defer freers_mutex.unlock();
    var n: usize = 0;
    var it = freers;
    while (it) |f| : (it = f.next) n += 1;
    return n;
}

fn retireRing(r: *Ring) void {
    r.close(); // every blocked kc_ring_wait returns and drops its reference
}

/// Completion rings (bridge/) by handle: `destroy` wakes a blocked wait; the last reference
/// withdraws every pending operation and frees the ring.
pub const RingRegistry = RefRegistry(Ring, .ring, freeRing, retireRing);

const Scope = @import("../sc/scope.zig").Scope;

fn freeScope(s: *Scope, _: std.mem.Allocator) void {
    s.release(); // the creator's reference; children may keep it alive a while longer
}

fn retireScope(s: *Scope) void {
    _ = s.cancel();
}

/// Native scopes by handle: `destroy` cancels the scope; it is freed when its last child ends.
pub const ScopeRegistry = RefRegistry(Scope, .scope, freeScope, retireScope);

/// A handle table whose objects are reference-counted: see the file header.
pub fn RefRegistry(
    comptime T: type,
    comptime kind: handle_mod.Kind,
    comptime free: fn (*T, std.mem.Allocator) void,
    comptime retire: fn (*T) void,
) type {
    return struct {
        const Self = @This();

        pub const Entry = struct {
            /// 0 while free. Acq_rel/acquire CAS in `acquire`; see `release`.
            refs: std.atomic.Value(u32) = .init(0),
            /// The handle this entry currently serves (0 while free): checked after taking a
            /// reference.
            handle: std.atomic.Value(u32) = .init(0),
            obj: ?*T = null,
            next_free: ?*Entry = null,
            /// Channels: the memory of this entry's channels, kept across uses (never freed
            /// while the registry lives). Written under the registry lock before the first
            /// handle to it is published.
            stable: if (T == Channel) ?*Channel else void = if (T == Channel) null else {},
            /// Rings: 1 while a thread's end sleeps until it holds the ring's only reference
            /// (`waitUntilLast`), the futex word it sleeps on; a `release` that leaves one
            /// reference sets it back to 0 and wakes it. 0 whenever the entry is free.
            last_wait: if (T == Ring) std.atomic.Value(u32) else void = if (T == Ring) .init(0) else {},
        };

        allocator: std.mem.Allocator,
        mutex: std.Thread.Mutex = .{},
        table: handle_mod.HandleTable(Entry, kind),
        free_entries: ?*Entry = null,
        /// Every entry ever allocated, for deinit.
        all: std.ArrayListUnmanaged(*Entry) = .empty,
        /// Channels: set by an owner that keeps pointers to its channels' memory (`Entry.stable`)
        /// and reads them after the handles died, as the C ABI's keep records do (root.zig,
        /// `ThreadRecord.Keep.ch`): that memory is valid only while the registry lives, so such
        /// a registry is never torn down (`deinit` asserts it).
        memory_named_outside: if (T == Channel) bool else void = if (T == Channel) false else {},

        pub fn init(allocator: std.mem.Allocator) Self {
            return .{ .allocator = allocator, .table = .init(allocator) };
        }

        /// Destroys every object still registered and frees everything. No operation may be
        /// in progress.
        pub fn deinit(r: *Self) void {
            // A pointer to a channel's memory kept outside would dangle (`memory_named_outside`).
            if (T == Channel) assert(!r.memory_named_outside);
            var index: u32 = 1;
            while (index < r.table.high_water) : (index += 1) {
                const h = r.table.liveHandle(index) orelse continue;
                r.destroy(h) catch {};
            }
            for (r.all.items) |e| {
                assert(e.refs.load(.monotonic) == 0); // an operation still in progress
                if (T == Channel) if (e.stable) |ch| ch.destroyRetired();
                r.allocator.destroy(e);
            }
            r.all.deinit(r.allocator);
            r.table.deinit();
            r.* = undefined;
        }

        /// Channels: creates one from `options` and names it.
        pub fn create(r: *Self, options: channel.Options) channel.Error!Handle {
            comptime assert(T == Channel);
            r.mutex.lock();
            defer r.mutex.unlock();
            const e = try r.takeEntry();
            if (e.stable) |ch| {
                ch.reinit(r.allocator, options) catch |err| {
                    r.putEntry(e);
                    return err;
                };
            } else {
                const ch = Channel.create(r.allocator, options) catch |err| {
                    r.putEntry(e);
                    return err;
                };
                // Release: pairs with the acquire load in `peek` (which can only find the entry
                // once `publish` gave it a handle, but the store is read without the lock).
                @atomicStore(?*Channel, &e.stable, ch, .release);
            }
            return r.publish(e, e.stable.?) catch |err| {
                e.stable.?.retire(); // `publish` put the entry back
                return err;
            };
        }

        /// The stable channel memory of the entry `h` names, and the entry's handle word to
        /// check it against, without taking a reference (see `Channel.tryGuarded`). Null for
        /// a handle that is not live now.
        pub fn peek(r: *Self, h: Handle) ?struct { ch: *Channel, guard: *const std.atomic.Value(u32) } {
            comptime assert(T == Channel);
            const e = r.table.get(h) orelse return null;
            const ch = @atomicLoad(?*Channel, &e.stable, .acquire) orelse return null;
            return .{ .ch = ch, .guard = &e.handle };
        }

        /// Tokens: creates one and names it.
        pub fn createToken(r: *Self) error{OutOfMemory}!Handle {
            comptime assert(T == channel.Token);
            const t = try r.allocator.create(channel.Token);
            errdefer r.allocator.destroy(t);
            t.* = .init;
            return r.add(t);
        }

        /// Names `obj` (which the registry then owns).
        pub fn add(r: *Self, obj: *T) error{OutOfMemory}!Handle {
            r.mutex.lock();
            defer r.mutex.unlock();
            const e = try r.takeEntry();
            return r.publish(e, obj);
        }

        /// Handles live now (the table's count, every alloc and free of which is under the
        /// registry lock, taken here): kc_coro_stats' fifth figure, a leak check for tests that
        /// before asked kc_chan_status of every slot at every generation (33M calls a count).
        pub fn liveCount(r: *Self) u32 {
            r.mutex.lock();
            defer r.mutex.unlock();
            return r.table.live;
        }

        /// Under the registry lock.
        fn takeEntry(r: *Self) error{OutOfMemory}!*Entry {
            if (r.free_entries) |f| {
                r.free_entries = f.next_free;
                f.next_free = null;
                return f;
            }
            try r.all.ensureUnusedCapacity(r.allocator, 1);
            const n = try r.allocator.create(Entry);
            n.* = .{};
            r.all.appendAssumeCapacity(n);
            return n;
        }

        /// Under the registry lock.
        fn putEntry(r: *Self, e: *Entry) void {
            e.next_free = r.free_entries;
            r.free_entries = e;
        }

        /// Under the registry lock: gives `e` (holding `obj`) a handle. The count leaves 0 only
        /// once the handle is had: a stale handle's `acquire` (one that found this entry before
        /// its last object's destroy) may take a reference from any count above 0 (and drop it on
        /// the handle check), so a count of 1 stored and then taken back on a failed handle
        /// allocation would wipe out such a reference (its release then started from 0: an
        /// assertion in Debug, a wrapped count in ReleaseFast). Until the store of 1 the count
        /// stays 0 and that `acquire` fails on it; nobody holds the new handle before we return.
        fn publish(r: *Self, e: *Entry, obj: *T) error{OutOfMemory}!Handle {
            // A free entry: every reference went (`freeEntry`), and from 0 no `acquire` takes one,
            // so nothing writes the count until the store below. Monotonic: its own value only.
            assert(e.refs.load(.monotonic) == 0);
            e.obj = obj;
            // The registry lock serialises every alloc and free of the table.
            const h = r.table.allocLocked(e) catch {
                e.obj = null; // the count is still 0: nothing to take back
                r.putEntry(e);
                return error.OutOfMemory;
            };
            // The table's reference. Release: pairs with the acquire load and CAS in `acquire`
            // (a stale lookup that takes a reference from this 1 sees `obj` stored above).
            e.refs.store(1, .release);
            // Release: pairs with the acquire loads in `acquire` and `Channel.tryGuarded`.
            e.handle.store(h, .release);
            return h;
        }

        /// Takes a reference to the object `h` names; pair it with `release`.
        pub fn acquire(r: *Self, h: Handle) error{BadHandle}!*Entry {
            const e = r.table.get(h) orelse return error.BadHandle;
            if (@import("builtin").is_test) if (test_mid_acquire) |f| f(.found);
            // Acquire: pairs with `publish`'s release store (the CAS below orders the rest).
            var refs = e.refs.load(.acquire);
            while (true) {
                if (refs == 0) return error.BadHandle; // being freed
                // Acq_rel: pairs with the release decrement in `release`, so the object we
                // use is the one its creator finished building.
                refs = e.refs.cmpxchgWeak(refs, refs + 1, .acq_rel, .acquire) orelse break;
            }
            if (@import("builtin").is_test) if (test_mid_acquire) |f| f(.counted);
            // Acquire: pairs with `publish`'s release store of the handle and `retireFreed`'s
            // release store of 0.
            if (e.handle.load(.acquire) != h) {
                // The entry was recycled for another object between the lookup and our
                // reference.
                r.release(e);
                return error.BadHandle;
            }
            return e;
        }

        pub fn objectOf(e: *Entry) *T {
            return e.obj.?;
        }

        pub const channelOf = objectOf;

        pub fn release(r: *Self, e: *Entry) void {
            // Acq_rel: the last releaser sees every other holder's use completed before it
            // frees. Rings: seq_cst, which also orders it before the load of `last_wait` in
            // `wakeLast` (see there).
            const prev = e.refs.fetchSub(1, if (T == Ring) .seq_cst else .acq_rel);
            assert(prev > 0);
            if (T == Ring and prev == 2) wakeLast(e);
            if (prev != 1) return;
            r.freeEntry(e);
        }

        /// Rings: a `release` that left one reference wakes a thread's end sleeping until its
        /// own is the only one (`waitUntilLast`). No system call unless one announced its sleep:
        /// every call on a live ring drops the count from 2 (the table's and its own) to 1.
        /// The entry may be freed (and recycled) from the decrement on; its memory stays while
        /// the registry lives, and a store or wake-up that reaches a later ring's waiter only
        /// wakes it early (it looks at the count again, and sleeps again). Its store of 0 never
        /// makes that waiter miss its own wake-up: the futex wait then finds the word changed,
        /// or sleeps already and this wake-up ends it. Not kept to the ring by a ring id
        /// compared with the word: the handle is 0 by now (the thread's end destroyed it), and
        /// the wake-up goes by the word's address, so a waiter that returned between a compare
        /// and it, freed its ring and gave way to the next one's waiter, is woken all the same.
        fn wakeLast(e: *Entry) void {
            comptime assert(T == Ring);
            // Seq_cst: with the seq_cst decrement before it in `release`, against
            // `waitUntilLast`'s seq_cst store of 1 before its seq_cst look at the count: either
            // this load sees the 1 (and wakes), or the store comes later in the single order
            // and that look sees our decrement (and the waiter does not sleep).
            if (e.last_wait.load(.seq_cst) == 0) return;
            // Back to 0 before the wake-up: a waiter yet to reach its futex wait then finds the
            // word changed (the kernel's check) and does not sleep through this wake-up.
            // Monotonic: nothing rides on the word but its own value (the waiter reads the
            // ring on the strength of `releaseIfLast`'s CAS, which pairs with our decrement).
            e.last_wait.store(0, .monotonic);
            std.Thread.Futex.wake(&e.last_wait, 1);
        }

        /// Rings: sleeps until a `release` may have left the caller's reference to `e` the only
        /// one (returns at once if it is now), for a thread's end that must free its ring
        /// itself (`endRing` in root.zig), a caller's function running in another thread's
        /// call on it for as long as it likes: that thread's end spun on `std.Thread.yield`
        /// meanwhile, a CPU burnt. It may also return early (a spurious wake-up): the caller
        /// tries `releaseIfLast` and comes back.
        pub fn waitUntilLast(_: *Self, e: *Entry) void {
            comptime assert(T == Ring);
            // Seq_cst: pairs with `wakeLast`'s load (see there).
            e.last_wait.store(1, .seq_cst);
            // Seq_cst: the other half of that pairing (with `release`'s seq_cst decrement).
            if (e.refs.load(.seq_cst) > 1) std.Thread.Futex.wait(&e.last_wait, 1);
            // Ours again, so that the entry's next ring makes no wake-ups for nothing. Monotonic:
            // a stale `wakeLast` storing 0 too is the same value; the count's CAS that may free
            // the entry next comes after it in this thread's order.
            e.last_wait.store(0, .monotonic);
        }

        /// `release` only if the caller's reference is the last one: then the object is freed
        /// here (true); else nothing changes (false). Once the count is 0 a racing `acquire`
        /// (a stale handle's lookup, which found the entry before its destroy) fails, where
        /// one that took a reference between a look at the count and a `release` made its own
        /// release the last: the free ran on that thread, after the caller went on.
        pub fn releaseIfLast(r: *Self, e: *Entry) bool {
            // Acq_rel on success: the acquire half pairs with the acq_rel decrement of each
            // other holder's `release` (their use of the object is done before the free here);
            // the release half with the acquire loads of `acquire`, which then read 0 and fail.
            // Monotonic on failure: nothing is read on the strength of it.
            if (e.refs.cmpxchgStrong(1, 0, .acq_rel, .monotonic) != null) return false;
            r.freeEntry(e);
            return true;
        }

        /// The last reference went: frees the object and recycles the entry.
        fn freeEntry(r: *Self, e: *Entry) void {
            free(e.obj.?, r.allocator);
            r.mutex.lock();
            defer r.mutex.unlock();
            e.obj = null;
            e.next_free = r.free_entries;
            r.free_entries = e;
        }

        /// Frees the handle at once and the object once no operation uses it.
        pub fn destroy(r: *Self, h: Handle) error{BadHandle}!void {
            const e = blk: {
                r.mutex.lock();
                defer r.mutex.unlock();
                break :blk r.table.freeLocked(h) orelse return error.BadHandle;
            };
            r.retireFreed(e);
        }

        /// `destroy`, but only if `keep(ctx, object)` says the object `h` names now is the one
        /// the caller means (BadHandle otherwise): for a caller holding a handle that may be
        /// stale, whose slot a later object may have taken (its generation wraps). Checked
        /// under the registry lock, where the handle cannot be freed and reused meanwhile.
        pub fn destroyIf(r: *Self, h: Handle, ctx: anytype, comptime keep: fn (@TypeOf(ctx), *T) bool) error{BadHandle}!void {
            const e = blk: {
                r.mutex.lock();
                defer r.mutex.unlock();
                // Every free of the table is under this lock: `e.obj` is the live object's.
                const live = r.table.get(h) orelse return error.BadHandle;
                if (!keep(ctx, live.obj.?)) return error.BadHandle;
                break :blk r.table.freeLocked(h).?;
            };
            r.retireFreed(e);
        }

        /// The rest of a destroy, once `e`'s handle is freed.
        fn retireFreed(r: *Self, e: *Entry) void {
            // Release: pairs with the acquire loads in `acquire` and on `Channel.tryGuarded`'s
            // lock-free answers. Not under a channel's lock: a guarded load under it is
            // ordered by the retire's cancel below, which takes that lock after this store
            // (`Channel.tryGuardedLocked`, `Channel.setUndeliveredSealing`).
            e.handle.store(0, .release);
            if (@import("builtin").is_test and T == Channel) if (test_after_free) |f| f();
            retire(e.obj.?);
            r.release(e); // the table's reference
        }
    };
}

const testing = std.testing;

test "handles: operations, destroy while a receiver is blocked, stale handles" {
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    var r = Registry.init(testing.allocator);
    defer r.deinit();
    const h = try r.create(.{ .elem_size = 8, .capacity = 1 });
    {
        const e = try r.acquire(h);
        defer r.release(e);
        var v: u64 = 7;
        try Registry.channelOf(e).send(std.mem.asBytes(&v), null, true);
    }
    const S = struct {
        var result: ?channel.Error = null;
        fn receiver(reg: *Registry, hh: Handle) void {
            const e = reg.acquire(hh) catch unreachable;
            defer reg.release(e);
            var v: u64 = 0;
            Registry.channelOf(e).receive(std.mem.asBytes(&v), null, false) catch unreachable; // 7
            Registry.channelOf(e).receive(std.mem.asBytes(&v), null, false) catch |err| {
                result = err;
            };
        }
    };
    const t = try std.Thread.spawn(.{}, S.receiver, .{ &r, h });
    // Destroy once the receiver blocks (bounded wait); destroying earlier is fine too.
    const deadline = @import("../sched/scheduler.zig").monotonicNs() + 10 * std.time.ns_per_s;
    while (@import("../sched/scheduler.zig").monotonicNs() < deadline) {
        const e = r.acquire(h) catch break;
        const ch = Registry.channelOf(e);
        ch.lock();
        const blocked = ch.receivers.head != null;
        ch.unlock();
        r.release(e);
        if (blocked) break;
        std.Thread.yield() catch {};
    }
    try r.destroy(h);
    t.join();
    try testing.expectEqual(@as(?channel.Error, error.Cancelled), S.result);
    try testing.expectError(error.BadHandle, r.acquire(h));
    try testing.expectError(error.BadHandle, r.destroy(h));
    // The entry is recycled for the next channel; the old handle stays dead.
    const h2 = try r.create(.{ .elem_size = 4 });
    try testing.expect(h2 != h);
    try testing.expectError(error.BadHandle, r.acquire(h));
    const e2 = try r.acquire(h2);
    r.release(e2);
}

test "destroyIf destroys only the object the caller means" {
    var r = TokenRegistry.init(testing.allocator);
    defer r.deinit();
    const h = try r.createToken();
    const e = try r.acquire(h);
    const t = TokenRegistry.objectOf(e);
    r.release(e);
    const S = struct {
        fn same(want: *channel.Token, got: *channel.Token) bool {
            return want == got;
        }
    };
    var other: channel.Token = .init;
    try testing.expectError(error.BadHandle, r.destroyIf(h, &other, S.same)); // not that one
    const e2 = try r.acquire(h); // still live
    r.release(e2);
    try r.destroyIf(h, t, S.same);
    try testing.expectError(error.BadHandle, r.acquire(h));
    try testing.expectError(error.BadHandle, r.destroyIf(h, t, S.same));
}

test "a guarded try-send's failure counts in no channel re-created in its memory since its guard check" {
    // The lock-free failure of a try-send holding no reference (`Channel.tryGuarded`, the C
    // ABI's) counts in `fail_full`. A destroy and a create re-using the entry's memory between
    // its guard check and the count once counted the dead channel's failure in the new one.
    var r = Registry.init(testing.allocator);
    defer r.deinit();
    const S = struct {
        var reg: *Registry = undefined;
        var old: Handle = 0;
        var new: Handle = 0;
        fn recreate() void {
            channel.test_hooks.before_fast_count = null; // once
            reg.destroy(old) catch unreachable;
            new = reg.create(.{ .elem_size = 8 }) catch unreachable;
        }
    };
    S.reg = &r;
    S.old = try r.create(.{ .elem_size = 8 }); // rendezvous: a send with no receiver fails lock-free
    const p = r.peek(S.old).?;
    var v: u64 = 1;
    // Counted where the channel stays.
    try testing.expectError(error.WouldBlock, p.ch.tryGuarded(.send, true, true, std.mem.asBytes(&v), 8, p.guard, S.old));
    try testing.expectEqual(@as(u64, 1), p.ch.snapshot().fail_full);
    channel.test_hooks.before_fast_count = S.recreate;
    defer channel.test_hooks.before_fast_count = null;
    const raced = p.ch.tryGuarded(.send, true, true, std.mem.asBytes(&v), 8, p.guard, S.old);
    try testing.expect(channel.test_hooks.before_fast_count == null); // the hook ran
    const q = r.peek(S.new).?;
    try testing.expectEqual(p.ch, q.ch); // the same memory
    try testing.expectEqual(@as(u64, 0), q.ch.snapshot().fail_full);
    try testing.expectError(error.Stale, raced); // the handle died meanwhile
    // The new channel counts its own failures from 0.
    try testing.expectError(error.WouldBlock, q.ch.tryGuarded(.send, true, true, std.mem.asBytes(&v), 8, q.guard, S.new));
    try testing.expectEqual(@as(u64, 1), q.ch.snapshot().fail_full);
    try r.destroy(S.new);
}

test "registry: a failed publish leaves a stale handle's acquire its own count" {
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    const S = struct {
        /// The leak-checking allocator, whose next allocation once `armed` fails, after it
        /// let the stale `acquire` on (`go`) and that took its reference or failed.
        const Failing = struct {
            child: std.mem.Allocator,
            armed: bool = false,

            fn allocator(f: *Failing) std.mem.Allocator {
                return .{ .ptr = f, .vtable = &.{ .alloc = alloc, .resize = resize, .remap = remap, .free = free } };
            }
            fn alloc(ctx: *anyopaque, len: usize, a: std.mem.Alignment, ra: usize) ?[*]u8 {
                const f: *Failing = @ptrCast(@alignCast(ctx));
                if (!f.armed) return f.child.rawAlloc(len, a, ra);
                f.armed = false;
                // Release: pairs with `waitFor`'s acquire load in `hook(.found)`.
                go.store(true, .release);
                _ = waitFor(&counted_or_failed, "the stale acquire to take a reference or fail");
                return null;
            }
            fn resize(ctx: *anyopaque, m: []u8, a: std.mem.Alignment, n: usize, ra: usize) bool {
                const f: *Failing = @ptrCast(@alignCast(ctx));
                return f.child.rawResize(m, a, n, ra);
            }
            fn remap(ctx: *anyopaque, m: []u8, a: std.mem.Alignment, n: usize, ra: usize) ?[*]u8 {
                const f: *Failing = @ptrCast(@alignCast(ctx));
                return f.child.rawRemap(m, a, n, ra);
            }
            fn free(ctx: *anyopaque, m: []u8, a: std.mem.Alignment, ra: usize) void {
                const f: *Failing = @ptrCast(@alignCast(ctx));
                f.child.rawFree(m, a, ra);
            }
        };
        // Flags between the test and the stale acquirer. Release stores, acquire loads: each
        // publishes what its setter did before it.
        var found: std.atomic.Value(bool) = .init(false);
        var go: std.atomic.Value(bool) = .init(false);
        var counted_or_failed: std.atomic.Value(bool) = .init(false);
        var published: std.atomic.Value(bool) = .init(false);
        var timed_out: std.atomic.Value(bool) = .init(false);
        var result: ?error{BadHandle} = null;

        /// A bounded wait in a hook or the allocator, which cannot fail the test: a timeout
        /// is recorded for the test to fail on (it also ends the wait).
        fn waitFor(flag: *std.atomic.Value(bool), what: []const u8) bool {
            const d = test_wait.Deadline.in(test_wait.default_ns, what);
            while (!flag.load(.acquire)) d.wait() catch {
                timed_out.store(true, .monotonic); // read after the join, which orders it
                return false;
            };
            return true;
        }

        fn hook(stage: AcquireStage) void {
            switch (stage) {
                // The lookup found the entry while the handle lived: wait for its destroy and
                // the entry's recycle, up to the failing allocation in `publish`.
                .found => {
                    found.store(true, .release);
                    _ = waitFor(&go, "the publish to reach its allocation");
                },
                // A reference taken on the entry `publish` holds: let the publish fail first.
                .counted => {
                    counted_or_failed.store(true, .release);
                    _ = waitFor(&published, "the publish to fail");
                },
            }
        }

        fn stale(reg: *TokenRegistry, h: Handle, j: *test_wait.Joiner) void {
            defer j.done();
            if (reg.acquire(h)) |e| reg.release(e) else |err| result = err;
            counted_or_failed.store(true, .release); // failed at the count (no `.counted`)
        }
    };
    var failing: S.Failing = .{ .child = testing.allocator };
    var r = TokenRegistry.init(failing.allocator());
    defer r.deinit();
    // A freed slot is reused at once, and the table's first chunk (slots 1 to 4095; handle.zig's
    // `chunk_len`) is filled: a handle with no free slot then needs a chunk allocated, the
    // allocation that fails.
    r.table.reuse_after = 0;
    const h = try r.createToken();
    while (r.table.high_water < 4096) _ = try r.createToken();
    // The next object, which takes `h`'s entry once it is free, and whose handle's chunk
    // cannot be allocated. Ours until a publish of it succeeds.
    const obj = try r.allocator.create(channel.Token);
    obj.* = .init;
    var obj_ours = true;
    defer if (obj_ours) r.allocator.destroy(obj);
    // Keeps `h`'s entry off the free list past its destroy, until its slot is taken again.
    const e = try r.acquire(h);
    const failed = race: {
        test_mid_acquire = S.hook;
        var j: test_wait.Joiner = .{};
        const t = try std.Thread.spawn(.{}, S.stale, .{ &r, h, &j });
        defer {
            // Also lets a stale acquirer still waiting (the test failed early) go on.
            S.go.store(true, .release);
            S.published.store(true, .release);
            j.join(t, test_wait.default_ns, "the stale acquirer");
            test_mid_acquire = null;
        }
        if (!S.waitFor(&S.found, "the stale lookup")) return error.Timeout;
        try r.destroy(h); // the count 2 to 1: ours
        _ = try r.createToken(); // `h`'s slot, with a new entry: no slot is free now
        r.release(e); // `h`'s entry to the free list, its count 0
        failing.armed = true;
        break :race r.add(obj);
    };
    try testing.expectError(error.OutOfMemory, failed);
    try testing.expect(!S.timed_out.load(.monotonic));
    try testing.expectEqual(@as(?error{BadHandle}, error.BadHandle), S.result);
    try testing.expectEqual(@as(u32, 0), e.refs.load(.acquire)); // free, nothing owed
    // The entry serves the next object, counted from 0.
    const h2 = try r.add(obj);
    obj_ours = false;
    const e2 = try r.acquire(h2);
    try testing.expect(e2 == e);
    try testing.expectEqual(@as(u32, 2), e.refs.load(.acquire));
    r.release(e2);
}

//! The channel lock: a spin lock that is biased towards the first thread that takes it.
//!
//! An uncontended channel operation is a few dozen instructions, and on these machines the
//! one atomic exchange of an ordinary lock is about half of it (~5 ns). Most channels are used
//! by one thread at a time for long stretches (a coroutine's own channel, a JavaScript
//! isolate's channel), so the lock is *biased*: the first thread to take it becomes its owner
//! and from then on takes and releases it with plain stores, no read-modify-write. The first
//! time another thread wants it, the bias is revoked for good (one `membarrier` system call,
//! ~0.3-0.8 us here) and the lock behaves as an ordinary test-and-test-and-set spin lock.
//!
//! Why plain stores are enough (an asymmetric Dekker handshake): the owner announces itself
//! with `busy = true` and then reads `owner`; a revoker writes `owner = revoking` and then reads
//! `busy`. Each side needs its write ordered before its read. The owner pays only a compiler
//! barrier; the revoker calls `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`, which makes every
//! running thread of the process execute a full memory barrier before it returns. So either the
//! owner's read comes after that barrier and sees `revoking` (it backs off and takes the lock
//! the ordinary way once the revocation is done), or its `busy = true` is visible to the
//! revoker, which then waits for `busy = false` (the owner's release store at unlock).
//!
//! Where `membarrier` is missing (old kernels, qemu-user, seccomp) or `KCORO_NO_BIAS` is set,
//! no lock is ever biased. Critical sections are short and never block, so a waiter spins
//! (with Go's pacing, see `lock`) rather than sleeping in the kernel.
const std = @import("std");
const builtin = @import("builtin");
const assert = std.debug.assert;

/// `owner` values that are not threads (thread pointers are aligned, never 1 or 2).
const unowned: usize = 0;
const revoking: usize = 1;
const revoked: usize = 2;

pub const SpinLock = struct {
    /// The ordinary lock, used once the bias is revoked (or never had).
    locked: std.atomic.Value(bool) = .init(false),
    /// The holder took the lock through the bias. Written and read only by the holder.
    held_biased: bool = false,
    /// The owner thread is inside (or about to enter) a biased critical section.
    busy: std.atomic.Value(bool) = .init(false),
    /// `unowned`, the owner's thread pointer, `revoking` or `revoked`.
    owner: std.atomic.Value(usize) = .init(unowned),

    const pauses_per_look = 32;
    /// Looks at a held lock before the waiter starts yielding the thread between looks (the
    /// holder was probably preempted).
    const looks_before_yield = 64;

    pub inline fn lock(l: *SpinLock) void {
        // The owner's path and the revoked path, inlined at every lock site.
        if (biasAvailable()) {
            const me = threadPointer();
            // Acquire: when it reads `revoked`, pairs with the revoker's release store (the
            // former owner's critical sections happen before ours).
            const o = l.owner.load(.acquire);
            if (o == me) {
                // Monotonic store, then only a compiler barrier before re-reading `owner`: a
                // revoker's membarrier supplies the CPU-level fence (see the file header).
                l.busy.store(true, .monotonic);
                asm volatile ("" ::: .{ .memory = true });
                if (l.owner.load(.monotonic) == me) {
                    l.held_biased = true;
                    return;
                }
                // Being revoked: step aside (release: pairs with the revoker's acquire load
                // of `busy`), then take the ordinary path.
                l.busy.store(false, .release);
            } else if (o == revoked) {
                l.lockSlow();
                l.held_biased = false;
                return;
            }
        }
        l.lockOther();
    }

    /// Everything but the owner's path: claiming the bias, revoking it, the ordinary lock.
    noinline fn lockOther(l: *SpinLock) void {
        if (biasAvailable()) {
            const me = threadPointer();
            var o = l.owner.load(.monotonic);
            if (o == unowned) {
                // Monotonic: nobody has ever held this lock (the bias is never given back),
                // so there is nothing to acquire from; the channel's fields were published
                // with the handle (or the pointer) that brought us here.
                o = l.owner.cmpxchgStrong(unowned, me, .monotonic, .monotonic) orelse {
                    l.lock(); // now the owner's path
                    return;
                };
            }
            if (o != me) l.revoke(o) else {
                // We own it but are being revoked (the inlined path stepped aside).
                l.revoke(l.owner.load(.monotonic));
            }
        }
        l.lockSlow();
        l.held_biased = false;
    }

    pub inline fn unlock(l: *SpinLock) void {
        if (l.held_biased) {
            l.held_biased = false;
            // Release: pairs with a revoker's acquire load of `busy` (our critical section
            // happens before its own).
            l.busy.store(false, .release);
            return;
        }
        // Release: pairs with the acquire swap in `lockSlow`.
        l.locked.store(false, .release);
    }

    /// Waits until the bias is gone (`o`: the last `owner` seen), revoking it if another
    /// thread holds it. Returns once `owner` is `revoked` (acquire: the former owner's critical
    /// sections happen before ours).
    fn revoke(l: *SpinLock, seen: usize) void {
        var o = seen;
        while (o != revoked) {
            assert(o != unowned); // a failed claim returns who holds the bias
            if (o == revoking) {
                // Another thread is revoking: wait for it.
                std.atomic.spinLoopHint();
                o = l.owner.load(.acquire);
                continue;
            }
            // `o` is the owner thread. Claim the revocation (acquire either way: we go on
            // reading `owner`; Zig wants success no weaker than failure).
            if (l.owner.cmpxchgStrong(o, revoking, .acquire, .acquire)) |cur| {
                o = cur;
                continue;
            }
            heavyBarrier();
            // Acquire: pairs with the owner's release store of `busy = false`.
            var spins: u32 = 0;
            while (l.busy.load(.acquire)) {
                spins += 1;
                if (spins < 1024) std.atomic.spinLoopHint() else std.Thread.yield() catch {};
            }
            // Release: pairs with the acquire loads of `owner` by waiters above (the owner's
            // critical sections, which we acquired, happen before theirs too).
            l.owner.store(revoked, .release);
            return;
        }
    }

    inline fn lockSlow(l: *SpinLock) void {
        if (!l.locked.swap(true, .acquire)) return; // acquire: pairs with the release in `unlock`
        l.lockContended();
    }

    /// The ordinary lock was held: spin (Go's pacing), then yield, until it is ours.
    noinline fn lockContended(l: *SpinLock) void {
        var looks: u32 = 0;
        while (true) {
            while (true) {
                if (looks < looks_before_yield) {
                    looks += 1;
                    for (0..pauses_per_look) |_| std.atomic.spinLoopHint();
                } else std.Thread.yield() catch {};
                // Monotonic: only a hint; the swap below acquires.
                if (!l.locked.load(.monotonic)) break;
            }
            // Acquire: pairs with the release in `unlock`.
            if (!l.locked.swap(true, .acquire)) return;
        }
    }

    /// True once the bias was revoked (for tests).
    pub fn isRevoked(l: *const SpinLock) bool {
        return l.owner.load(.acquire) == revoked;
    }
};

/// The calling thread's thread pointer: a unique, stable identity for as long as the thread
/// lives, read with one instruction (0 where there is none to read: no bias then).
inline fn threadPointer() usize {
    return switch (builtin.cpu.arch) {
        .x86_64 => asm volatile ("mov %%fs:0, %[ret]"
            : [ret] "=r" (-> usize),
        ),
        .aarch64 => asm volatile ("mrs %[ret], tpidr_el0"
            : [ret] "=r" (-> usize),
        ),
        else => 0,
    };
}

const MEMBARRIER_CMD_QUERY = 0;
const MEMBARRIER_CMD_PRIVATE_EXPEDITED = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED = 1 << 4;

/// 0: not decided yet, 1: biasing on, 2: off.
var bias_state: std.atomic.Value(u8) = .init(0);

/// Whether locks may be biased in this process: Linux with a working private expedited
/// membarrier on x86_64 or aarch64, and `KCORO_NO_BIAS` unset. Decided once.
pub fn biasAvailable() bool {
    // Acquire: pairs with the release in `decide`; the registration happened before.
    const s = bias_state.load(.acquire);
    if (s != 0) return s == 1;
    return decide();
}

noinline fn decide() bool {
    const on = blk: {
        if (builtin.os.tag != .linux) break :blk false;
        if (builtin.cpu.arch != .x86_64 and builtin.cpu.arch != .aarch64) break :blk false;
        if (std.posix.getenv("KCORO_NO_BIAS")) |v| if (v.len != 0 and !std.mem.eql(u8, v, "0")) break :blk false;
        const linux = std.os.linux;
        const q = linux.syscall3(.membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
        if (@as(isize, @bitCast(q)) < 0 or q & MEMBARRIER_CMD_PRIVATE_EXPEDITED == 0) break :blk false;
        const r = linux.syscall3(.membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0);
        if (r != 0) break :blk false;
        break :blk threadPointer() != 0;
    };
    // Release: pairs with the acquire in `biasAvailable`. Racing deciders agree (registering
    // twice is harmless).
    bias_state.store(if (on) 1 else 2, .release);
    return on;
}

/// A full memory barrier on every running thread of the process.
fn heavyBarrier() void {
    const r = std.os.linux.syscall3(.membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
    // Registered in `decide` before any lock could be biased; it cannot fail after that.
    assert(r == 0);
}

test "a biased lock is taken without the ordinary lock, and revoked by a second thread" {
    var l: SpinLock = .{};
    l.lock();
    const biased = biasAvailable();
    try std.testing.expectEqual(biased, l.held_biased);
    try std.testing.expect(!l.locked.load(.monotonic));
    l.unlock();
    const Ctx = struct {
        fn run(lk: *SpinLock, c: *u64, n: usize) void {
            runFrom(lk, c, n, null);
        }
        fn runFrom(lk: *SpinLock, c: *u64, n: usize, started: ?*std.atomic.Value(bool)) void {
            if (started) |f| f.store(true, .release);
            for (0..n) |_| {
                lk.lock();
                // A read-modify-write spread over the critical section: lost updates show
                // if two threads are ever inside at once.
                const v = c.*;
                std.atomic.spinLoopHint();
                c.* = v + 1;
                lk.unlock();
            }
        }
    };
    // Many fresh locks, each biased to this thread and then revoked while this thread is
    // taking it as fast as it can: the revocation races the owner's fast path every round.
    for (0..200) |_| {
        var fresh: SpinLock = .{};
        var counter: u64 = 0;
        Ctx.run(&fresh, &counter, 1); // biased to this thread now
        var started: std.atomic.Value(bool) = .init(false);
        const t = try std.Thread.spawn(.{}, Ctx.runFrom, .{ &fresh, &counter, 2_000, &started });
        while (!started.load(.acquire)) std.atomic.spinLoopHint(); // overlap the two
        Ctx.run(&fresh, &counter, 2_000);
        t.join();
        try std.testing.expectEqual(@as(u64, 4_001), counter);
        if (biased) try std.testing.expect(fresh.isRevoked());
        fresh.lock();
        try std.testing.expect(!fresh.held_biased); // revoked for good
        fresh.unlock();
    }
}

//! The channel lock: a spin lock that is biased towards the first thread that takes it.
//!
//! An uncontended channel operation is a few dozen instructions, and on these machines the
//! one atomic exchange of an ordinary lock is about half of it (~5 ns). Most channels are used
//! by one thread at a time for long stretches (a coroutine's own channel, a JavaScript
//! isolate's channel), so the lock is *biased*: a thread that takes it `bias_after` times in a
//! row (under the ordinary lock) becomes its owner and from then on takes and releases it with
//! plain stores, no read-modify-write. The first time another thread wants it, the bias is
//! revoked for good (one `membarrier` system call, ~0.3-0.8 us here, more under load) and the
//! lock behaves as an ordinary test-and-test-and-set spin lock. Channels that threads take
//! turns on from the start never get biased, so they never pay for a revocation.
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
//! (looking at the lock every few microseconds, see `look_ns`) rather than sleeping in the kernel.
const std = @import("std");
const builtin = @import("builtin");
const test_wait = @import("../test_wait.zig");
const assert = std.debug.assert;

/// `owner` values that are not threads (thread pointers are aligned, never 1 or 2).
const unowned: usize = 0;
const revoking: usize = 1;
const revoked: usize = 2;

/// Acquisitions in a row by one thread before the lock is biased towards it.
const bias_after = 64;

pub const SpinLock = struct {
    /// The ordinary lock, used once the bias is revoked (or never had).
    locked: std.atomic.Value(bool) = .init(false),
    /// The holder took the lock through the bias. Written and read only by the holder.
    held_biased: bool = false,
    /// The owner thread is inside (or about to enter) a biased critical section.
    busy: std.atomic.Value(bool) = .init(false),
    /// `unowned`, the owner's thread pointer, `revoking` or `revoked`.
    owner: std.atomic.Value(usize) = .init(unowned),
    /// While unowned, under the ordinary lock: the last thread to take it and how many times
    /// in a row it did.
    streak_thread: usize = 0,
    streak: u32 = 0,

    /// Looks at a held lock before the waiter starts yielding the thread between looks (the
    /// holder was probably preempted): ~64 us of spinning.
    const looks_before_yield = 16;

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

    /// How `tryLockQuick` took the lock (`none`: it did not), for `unlockQuick`.
    pub const Quick = enum { none, biased, ordinary };

    /// `lock` where that needs no wait and no call: the owner's path, or one exchange on a
    /// lock that no bias can touch any more (revoked, or biasing off). `none`: nothing was
    /// taken, `lock` must (a streak towards a bias, a revocation, a held lock). Release it with
    /// `unlockQuick(how)`, not `unlock`: `held_biased` is neither written nor read. For callers
    /// whose whole fast path must stay call-free, so that it needs no stack frame of its own
    /// (`Channel.tryLean`).
    pub inline fn tryLockQuick(l: *SpinLock) Quick {
        // Acquire: pairs with the release in `decide`, as in `biasAvailable` (0: undecided,
        // which `lock` decides).
        switch (bias_state.load(.acquire)) {
            1 => {
                const me = threadPointer();
                // Acquire: as in `lock`.
                const o = l.owner.load(.acquire);
                if (o == me) {
                    // As in `lock`: a monotonic store and a compiler barrier before the
                    // re-read; a revoker's membarrier supplies the fence.
                    l.busy.store(true, .monotonic);
                    asm volatile ("" ::: .{ .memory = true });
                    if (l.owner.load(.monotonic) == me) return .biased;
                    // Being revoked: step aside as `lock` does (release: pairs with the
                    // revoker's acquire load of `busy`); `lock` waits for the revocation.
                    l.busy.store(false, .release);
                    return .none;
                }
                if (o != revoked) return .none;
            },
            2 => {},
            else => return .none,
        }
        // Acquire: pairs with the release in `unlockQuick`/`unlock`, as in `lockSlow`.
        if (l.locked.swap(true, .acquire)) return .none;
        return .ordinary;
    }

    /// Releases what `tryLockQuick` took as `how`, as `unlock` would.
    pub inline fn unlockQuick(l: *SpinLock, how: Quick) void {
        switch (how) {
            // Release: pairs with a revoker's acquire load of `busy`, as in `unlock`.
            .biased => l.busy.store(false, .release),
            // Release: pairs with the acquire swap in `lockSlow` and `tryLockQuick`.
            .ordinary => l.locked.store(false, .release),
            .none => unreachable,
        }
    }

    /// Everything but the owner's and the revoked paths: the ordinary lock while no thread
    /// owns the bias (claiming it after `bias_after` acquisitions in a row by one thread), and
    /// revoking another thread's bias.
    noinline fn lockOther(l: *SpinLock) void {
        if (biasAvailable()) {
            const me = threadPointer();
            while (true) {
                // Acquire: as in `lock`.
                const o = l.owner.load(.acquire);
                if (o == revoked) break;
                if (o == unowned) {
                    l.lockSlow();
                    // Under the ordinary lock, look again: a thread may have claimed the bias
                    // (it claims only while holding the ordinary lock, so before we took it).
                    const now = l.owner.load(.acquire);
                    if (now == unowned) {
                        l.countStreak(me);
                        l.held_biased = false;
                        return;
                    }
                    if (now == revoked) {
                        l.held_biased = false;
                        return;
                    }
                    // Another thread owns it and may be inside through its own path: let go
                    // of the ordinary lock and revoke. (Release: pairs with `lockSlow`.)
                    l.locked.store(false, .release);
                    continue;
                }
                // Another thread owns it, or we do and a revocation is under way (the inlined
                // path stepped aside): wait for or carry out the revocation.
                l.revoke(if (o == me) l.owner.load(.acquire) else o);
                break;
            }
        }
        l.lockSlow();
        l.held_biased = false;
    }

    /// Under the ordinary lock of an unowned lock: counts acquisitions in a row by one thread
    /// and claims the bias for it at `bias_after`. Channels that two threads take turns on
    /// (a producer and a consumer on different workers) are never biased, so they never pay a
    /// revocation.
    fn countStreak(l: *SpinLock, me: usize) void {
        if (l.streak_thread != me) {
            l.streak_thread = me;
            l.streak = 1;
            return;
        }
        l.streak += 1;
        if (l.streak < bias_after) return;
        // Release: a thread that reads us as owner (acquire) and then revokes sees everything
        // before; our own later critical sections follow this one in program order.
        l.owner.store(me, .release);
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
                // Another thread is revoking: wait for it. Acquire: as in `lock`.
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

    /// The ordinary lock was held: wait `look_ns` between looks at it (spinning), then yield,
    /// until it is ours.
    noinline fn lockContended(l: *SpinLock) void {
        const pauses = pausesPerLook();
        var looks: u32 = 0;
        while (true) {
            while (true) {
                if (looks < looks_before_yield) {
                    looks += 1;
                    for (0..pauses) |_| std.atomic.spinLoopHint();
                } else std.Thread.yield() catch {};
                // Monotonic: only a hint; the swap below acquires.
                if (!l.locked.load(.monotonic)) break;
            }
            // Acquire: pairs with the release in `unlock`.
            if (!l.locked.swap(true, .acquire)) return;
        }
    }

    /// Whether the lock may be held now (a hint): false only if no thread holds it through the
    /// ordinary lock and no bias owner is inside its section. A thread that holds it reads its
    /// own store of `locked` or `busy`, so it never reads false: a caller may skip asking
    /// whether it holds the lock itself (a thread-local read, `Channel.inHookOf`) on false.
    pub inline fn looksHeld(l: *const SpinLock) bool {
        // Monotonic: a hint; a holder's own stores (program order) are all it must see.
        return l.locked.load(.monotonic) or l.busy.load(.monotonic);
    }

    pub fn isRevoked(l: *const SpinLock) bool {
        // Acquire: pairs with the revoker's release store of `revoked`.
        return l.owner.load(.acquire) == revoked;
    }
};

/// The calling thread's thread pointer: a unique, stable identity for as long as the thread
/// lives, read with one instruction (0 where there is none to read: no bias then).
/// How long a waiter spins between two looks at a held lock. Long on purpose: a look at the
/// lock's line takes it (and the data lines the holder touches next) away from the holder's
/// core, so frequent looks slow the holder down more than they speed the handover. A waiter
/// that stays away for a few microseconds lets the holder run a burst of operations on lines
/// that stay in its cache. Measured on ChanSem, ChanProdCons0/10/100 (2 workers): a look every
/// ~0.5 us (the old fixed 32 pauses) ran 1.5-2x slower than one every 2-8 us, and every
/// shorter interval (or a backoff starting short and doubling) slower still.
const look_ns = 4000;

/// `look_ns` in spin-loop hints, measured once on first contention (a hint costs ~1.5 ns on
/// some x86_64 cores and ~16 ns on others; ARM64's differs again). 0: not measured yet.
var pauses_per_look: std.atomic.Value(u32) = .init(0);

fn pausesPerLook() u32 {
    // Monotonic: a number every racing measurer computes alike; nothing else is published.
    const known = pauses_per_look.load(.monotonic);
    if (known != 0) return known;
    return calibrate();
}

noinline fn calibrate() u32 {
    const probe = 256;
    const start = std.time.Instant.now() catch return fallback_pauses;
    for (0..probe) |_| std.atomic.spinLoopHint();
    const end = std.time.Instant.now() catch return fallback_pauses;
    const ns = @max(end.since(start), 1);
    const n: u32 = @intCast(std.math.clamp(look_ns * probe / ns, 32, 8192));
    pauses_per_look.store(n, .monotonic); // monotonic: a tuning value, ordering nothing
    return n;
}

/// Where the clock cannot be read: the measured count on the x86_64 machines this was tuned on.
const fallback_pauses = 256;

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

test "a lock biased after a streak is taken without the ordinary lock, and revoked by a second thread" {
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    var l: SpinLock = .{};
    const biased = biasAvailable();
    for (0..bias_after) |_| {
        l.lock();
        try std.testing.expect(!l.held_biased); // the ordinary lock until the streak is long enough
        try std.testing.expect(l.locked.load(.monotonic));
        l.unlock();
    }
    l.lock();
    try std.testing.expectEqual(biased, l.held_biased);
    try std.testing.expectEqual(!biased, l.locked.load(.monotonic));
    l.unlock();
    const Ctx = struct {
        fn run(lk: *SpinLock, c: *u64, n: usize) void {
            for (0..n) |_| {
                lk.lock();
                // A read-modify-write spread over the critical section: lost updates show
                // if two threads are ever inside at once. Long enough that a revocation
                // almost always finds the owner inside. Atomic halves (monotonic: the lock
                // orders them), since `runAt` reads the counter without the lock: a plain
                // store racing that load is a data race (ThreadSanitizer reported it).
                const v = @atomicLoad(u64, c, .monotonic);
                for (0..64) |_| std.atomic.spinLoopHint();
                @atomicStore(u64, c, v + 1, .monotonic);
                lk.unlock();
            }
        }
        /// Waits until the counter reaches `at` (the other thread, the owner, is then busy
        /// taking the lock), then runs.
        fn runAt(lk: *SpinLock, c: *u64, n: usize, at: u64) void {
            while (@atomicLoad(u64, c, .monotonic) < at) std.atomic.spinLoopHint();
            run(lk, c, n);
        }
    };
    // Many fresh locks, each biased to this thread and then revoked while this thread is
    // taking it as fast as it can: the revocation races the owner's fast path every round.
    for (0..200) |_| {
        var fresh: SpinLock = .{};
        var counter: u64 = 0;
        Ctx.run(&fresh, &counter, bias_after + 1); // biased to this thread now
        // The revocation comes while this thread, the owner, is busy taking the lock.
        const t = try std.Thread.spawn(.{}, Ctx.runAt, .{ &fresh, &counter, 2_000, bias_after + 51 });
        Ctx.run(&fresh, &counter, 2_000);
        t.join();
        try std.testing.expectEqual(@as(u64, 4_000 + bias_after + 1), counter);
        if (biased) try std.testing.expect(fresh.isRevoked());
        fresh.lock();
        try std.testing.expect(!fresh.held_biased); // revoked for good
        fresh.unlock();
    }
}

test "a lock that two threads take turns on from the start is never biased" {
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    if (!biasAvailable()) return;
    var l: SpinLock = .{};
    var turn: std.atomic.Value(u32) = .init(0);
    const Ctx = struct {
        fn run(lk: *SpinLock, t: *std.atomic.Value(u32), mine: u32) void {
            for (0..2 * bias_after) |_| {
                while (t.load(.acquire) != mine) std.atomic.spinLoopHint();
                lk.lock();
                lk.unlock();
                t.store(1 - mine, .release);
            }
        }
    };
    const t = try std.Thread.spawn(.{}, Ctx.run, .{ &l, &turn, 1 });
    Ctx.run(&l, &turn, 0);
    t.join();
    try std.testing.expectEqual(unowned, l.owner.load(.acquire)); // no revocation was needed
}

test "tryLockQuick takes only what needs no wait: the owner's bias or a free lock past biasing, never a streak's" {
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    const biased = biasAvailable();
    var l: SpinLock = .{};
    if (biased) {
        // Unowned: the streak towards a bias is `lock`'s to count, so nothing is taken.
        try std.testing.expectEqual(SpinLock.Quick.none, l.tryLockQuick());
        try std.testing.expect(!l.locked.load(.monotonic) and !l.busy.load(.monotonic));
        try std.testing.expectEqual(@as(u32, 0), l.streak);
        for (0..bias_after) |_| {
            l.lock();
            l.unlock();
        }
        // Biased to this thread: taken through the bias, released by `unlock`.
        try std.testing.expectEqual(SpinLock.Quick.biased, l.tryLockQuick());
        try std.testing.expect(l.busy.load(.monotonic) and !l.locked.load(.monotonic));
        l.unlockQuick(.biased);
        try std.testing.expect(!l.busy.load(.monotonic));
        // Biased to another thread: that takes a revocation, which is `lock`'s.
        const Other = struct {
            fn run(lk: *SpinLock, out: *SpinLock.Quick) void {
                out.* = lk.tryLockQuick();
            }
        };
        var got: SpinLock.Quick = .biased;
        const t = try std.Thread.spawn(.{}, Other.run, .{ &l, &got });
        t.join();
        try std.testing.expectEqual(SpinLock.Quick.none, got);
        try std.testing.expectEqual(threadPointer(), l.owner.load(.monotonic)); // still ours
        l.revoke(l.owner.load(.acquire));
        try std.testing.expect(l.isRevoked());
    }
    // Revoked (or biasing off): the ordinary lock, one exchange.
    try std.testing.expectEqual(SpinLock.Quick.ordinary, l.tryLockQuick());
    try std.testing.expect(l.locked.load(.monotonic));
    // Held: no wait, nothing taken.
    try std.testing.expectEqual(SpinLock.Quick.none, l.tryLockQuick());
    l.unlockQuick(.ordinary);
    try std.testing.expect(!l.locked.load(.monotonic));
}

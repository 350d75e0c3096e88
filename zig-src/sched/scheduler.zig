//! The work-stealing scheduler: N worker threads, each running coroutines from its own LIFO
//! slot and local queue, the shared inject queue, and by stealing half of another worker's
//! queue; per-worker timers; drain and shutdown.
//!
//! Threads: `spawn`, `unpark` and `stats` may be called from any thread (workers, the
//! JavaScript thread, other OS threads); `drain` and `shutdown` from any thread but this
//! scheduler's workers (a coroutine's `drain` is InvalidArgument; its `shutdown` would join its
//! own thread: a panic that says so, in every mode); `yield`, `park` and `sleep` only from a
//! coroutine this scheduler runs.
//!
//! Picking the next coroutine (a worker's "tick"):
//! 1. every 61st tick, the inject queue first, so that outside submissions are never starved;
//!    every 31st tick, the FIFO list first, so that yielded coroutines are never starved;
//! 2. the LIFO slot: the coroutine most recently spawned or woken by the running one runs next
//!    (its data is hot in cache), at most `lifo_cap` times in a row, so a ping-pong pair that
//!    keeps waking each other cannot starve the rest; after that it goes to the FIFO list;
//! 3. the local deque, newest first (a spawned coroutine displaced from the LIFO slot lands
//!    here, so a tree of spawns is explored depth-first and only a few hundred of a million
//!    skynet coroutines are alive at once);
//! 4. the FIFO list: coroutines that yielded, that a timer woke, or whose LIFO streak ended;
//! 5. the inject queue;
//! 6. stealing half of a random victim's deque (its oldest entries), by at most half of the
//!    workers at once.
//! A worker with nothing to do spins briefly, then sleeps on a futex until work or its next
//! timer; see `idle` for why no wake-up is lost.
//!
//! Drain: `drain` returns when no coroutine is runnable, running or waiting on a timer: the
//! busy count is +1 for each such coroutine and for each armed timer, and reaches 0 only
//! then. Coroutines parked with no timer do not count: nothing inside the scheduler will wake
//! them. The count is not one shared word: every worker keeps two monotonic counters of its
//! own (`busy_in`, `busy_out`; a plain store each, no locked instruction on another core's
//! line), threads outside the workers share a second pair, and `drain` adds them all up from
//! two identical collects (monotonic counters that read the same twice held those values
//! together in between). A shared word cost ChanPopular a tenth of its time: every wake and
//! every park on either worker moved its line. Workers tell a waiting `drain` to look again
//! when they go idle (see `Worker.idle`).
//!
//! Shutdown stops every worker (joins the threads) and then frees every stack, also those of
//! coroutines that never finished (mode `cancel`, or parked forever). Mode `finish` drains
//! first. A second shutdown does nothing; anything but `stats` after it returns
//! error.Shutdown.
//!
//! Wakers outside the workers: a thread that is no worker of this scheduler (a channel's
//! completer on a JavaScript thread, a token's cancel, a hand-driven coroutine) takes a `Ref`
//! under some lock and wakes it after it let go of that lock, so a shutdown may come in between
//! and unmap the stack the `Ref` points into. Such a wake (`wakeOutside`) counts itself in
//! `wakers` and then goes on only if the scheduler still runs the run its `Ref` was taken in
//! (`epoch`); a shutdown stops the run and then waits for the wakes counted before it unmaps
//! anything. A waker stalled across a shutdown and a restart at the same address finds another
//! epoch and touches nothing. Workers need neither: a shutdown joins them first.
const std = @import("std");
const test_wait = @import("../test_wait.zig");
const assert = std.debug.assert;
const Futex = std.Thread.Futex;
const coroutine = @import("../coro/coroutine.zig");
const stack_mod = @import("../coro/stack.zig");
const Deque = @import("deque.zig").Deque;
const ctx_mod = @import("../sc/context.zig");

const Coroutine = coroutine.Coroutine;
pub const Ref = coroutine.Ref;
const Stack = stack_mod.Stack;

/// Local run queue slots (8 KiB a worker): a burst of wake-ups (ChanPopular's 1,000) stays in
/// the deque instead of overflowing into the inject queue's mutex (256 cost ChanPopular ~15%).
pub const queue_capacity = 1024;
/// How many stacks a worker keeps for itself before handing a batch back to the shared pool.
const cache_max = 64;
const cache_batch = 32;
/// Longest a worker's FIFO list may grow before overflow goes to the inject queue.
const fifo_max = 64;
/// The bounded shutdown's sleeps while a spawn from outside holds `lifecycle` (`shutdownBy`):
/// that spawn's unlock may miss the wake (`unlockLifecycleSpawn`), so the sleep is timed, from
/// this doubling to `lifecycle_backoff_max_ns`; a spawn holds the lock for a few hundred ns.
const lifecycle_backoff_min_ns: u64 = 50 * std.time.ns_per_us;
const lifecycle_backoff_max_ns: u64 = std.time.ns_per_ms;

pub const Options = struct {
    /// Worker threads; 0 means one per CPU.
    workers: u32 = 0,
    stack_size: usize = stack_mod.default_stack_size,
    stack_mode: stack_mod.Mode = .guarded,
    /// Save FP control state for every spawned coroutine.
    fp_control: bool = false,
    /// Consecutive LIFO-slot runs before the local queue gets a turn. Go's runnext lets a
    /// ping-pong pair run for its whole 10 ms time slice; 32 still bounds the wait of the
    /// others to 32 short runs, and with 3 a producer/consumer pair on a rendezvous channel
    /// was cut off (to the FIFO list, behind stealable work) often enough to cost ~20% of
    /// ChanProdCons0 (~100 -> ~80 ns/op).
    lifo_cap: u32 = 32,
    /// How long an idle worker keeps looking for work before it sleeps on the futex. Waking a
    /// sleeping worker costs the waker a system call and the worker ~23 us here; a worker
    /// that spins costs neither (`notify` skips the wake while one spins).
    spin_ns: u64 = 20 * std.time.ns_per_us,
    /// How late a timer may be before the watchdog fires it for its worker (see
    /// `Scheduler.watchdogMain`). A worker fires its own timers between coroutines, within
    /// microseconds of the deadline; one stuck in a coroutine that computes without parking
    /// or yielding leaves them to the watchdog, so they fire at most this late.
    timer_grace_ns: u64 = std.time.ns_per_ms,
    /// See `Scheduler.finish_hook`.
    finish_hook: ?*const fn (*Coroutine) void = null,
    /// See `Scheduler.unmap_hook`.
    unmap_hook: ?*const fn (deadline: ?u64) bool = null,
    /// See `Scheduler.end_hook`.
    end_hook: ?*const fn (ShutdownMode) void = null,
};

pub const ShutdownMode = enum(u32) {
    /// Stop at once; coroutines that have not finished never run again.
    cancel = 0,
    /// Drain first: everything runnable or waiting on a timer runs to completion or to a park
    /// with no timer.
    finish = 1,
};

pub const Error = error{ Shutdown, OutOfMemory, InvalidArgument, NotInCoroutine };
/// `Scheduler.restart`'s: `Error`, and error.Running for a run already going (another
/// thread's restart came first; the C ABI's KC_EBUSY, `status.fromError`).
pub const RestartError = Error || error{Running};

/// Status a coroutine's wait ended with (`Coroutine.wake_status`).
pub const wake_ok: i32 = 0;
pub const wake_timeout: i32 = -62; // KC_ETIME

pub const WorkerStats = struct {
    runs: u64,
    steals: u64,
    parks: u64,
    queue_depth: u64,
};

/// Heaps with fewer disarmed timers than this are not pruned (`Worker.pruneTimers`).
const prune_min = 64;
/// `Worker.next_deadline` of an empty heap, and `Scheduler.watch_until` of a watchdog that
/// sleeps until woken.
const never = std.math.maxInt(u64);

const Timer = struct {
    deadline: u64,
    co: *Coroutine,
    gen: u32,
    /// `generation << 1 | 1`: the armed word this timer fires only if it still matches.
    armed_word: u32,

    fn order(_: void, a: Timer, b: Timer) std.math.Order {
        return std.math.order(a.deadline, b.deadline);
    }
};

threadlocal var current_worker: ?*Worker = null;

/// The last run a scheduler started (`Scheduler.epoch`), process-wide, so that a `Ref` of one
/// scheduler's run never matches a later run at the same address. 0 is no run (a hand-driven
/// coroutine's `Ref`). Monotonic: a counter, ordering nothing.
var last_epoch = std.atomic.Value(u32).init(0);

fn nextEpoch() u32 {
    while (true) {
        const e = last_epoch.fetchAdd(1, .monotonic) +% 1;
        if (e != 0) return e;
    }
}

/// Tests: the rounds of `awaitNone`'s loop, all calls together.
var quiesce_looks = std.atomic.Value(u64).init(0);

/// Tests: code run at fixed points, to make a race's window certain.
pub var test_hooks: if (@import("builtin").is_test) struct {
    /// In `unpark`, before anything: a waker that took its `Ref` and has not woken it yet.
    before_wake: ?*const fn () void = null,
    /// In `wakeOutside`, counted in `wakers` and past its checks, before it reads the coroutine.
    in_wake: ?*const fn () void = null,
    /// In `shutdown`, each time it looks at `wakers` and finds one in flight (`awaitNone`).
    wakers_pending: ?*const fn () void = null,
    /// In `parkUntil`, woken before its deadline, right after its CAS disarmed the timer.
    after_disarm: ?*const fn () void = null,
    /// In `drainUntil`, counted in `drainers`, before it looks at the state.
    drain_counted: ?*const fn () void = null,
    /// In `Worker.run`, once a coroutine finished there, before the worker counts it out of
    /// `liveCount` (unless it counted itself out: `countFinishedNow`).
    before_count_out: ?*const fn () void = null,
    /// In `shutdownBy`, with the deadline its finish's drain waits until (null: none): short of
    /// the call's by `joinReserve`.
    drain_by: ?*const fn (?u64) void = null,
    /// In `awaitWorkersExited`, with the deadline its join waits until.
    join_by: ?*const fn (u64) void = null,
    /// In `shutdownBy`'s bounded wait for `lifecycle`, each time it did not give up and is
    /// about to pause, with its deadline.
    lock_wait: ?*const fn (u64) void = null,
    /// In `shutdownBy`, once it holds `lifecycle`, before it says so (`lifecycle_shutdown`).
    lifecycle_locked: ?*const fn () void = null,
    /// In `shutdownBy`, on its way out (past its unlock of `lifecycle`, or its giving up on
    /// it), before it counts itself out of `lifecycle_pending`.
    before_uncount: ?*const fn () void = null,
    /// In `spawnWith` from outside the workers, once it holds `lifecycle`, before it reads
    /// the state.
    spawn_locked: ?*const fn () void = null,
    /// In `begin`, the thread that fails to start as if `std.Thread.spawn` had failed: worker
    /// `k` for `k` below the worker count, the timer watchdog for `k` equal to it.
    fail_thread: ?usize = null,
    /// In `begin`, before the thread that `fail_thread` names fails (the run going).
    begin_failing: ?*const fn () void = null,
    /// In `restart`, once the new run started, before it lets go of `lifecycle`.
    restarted: ?*const fn () void = null,
    /// In `workerStats`, holding the workers' array (`enterWorkers`), before it reads it.
    stats_reading: ?*const fn () void = null,
    /// In `enterWorkers`, a reader that found no workers (not counted in `readers`), before
    /// it returns.
    found_no_workers: ?*const fn () void = null,
    /// In `liveIn` and `collectBusy` (`liveCount`, `busyCount`, a drain's look), between their
    /// two halves of reads: the counts out (`finished`, `busy_out`), then the counts in.
    between_count_reads: ?*const fn () void = null,
} else struct {} = .{};

/// Tests: whether `begin`'s thread `k` fails (`test_hooks.fail_thread`), after `begin_failing`.
fn failThreadForTest(k: usize) bool {
    if (test_hooks.fail_thread != k) return false;
    if (test_hooks.begin_failing) |f| f();
    return true;
}

/// The worker running this thread. Coroutine code must read it through here, never cache it:
/// see `getCurrent` in coro/coroutine.zig (a coroutine may resume on another worker).
noinline fn thisWorker() ?*Worker {
    const p: *volatile ?*Worker = &current_worker;
    return p.*;
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of every deadline in kcoro (`coroutine.monotonicNs`,
/// defined at the lowest layer that reads it).
pub const monotonicNs = coroutine.monotonicNs;

fn bump(counter: *std.atomic.Value(u64)) void {
    counter.store(counter.load(.monotonic) + 1, .monotonic);
}

const Worker = struct {
    sched: *Scheduler,
    index: u32,
    thread: ?std.Thread = null,
    queue: Deque(Coroutine, queue_capacity) = .{},
    /// The coroutine this worker runs next (`putLifo`). Only the owner reads and writes it
    /// for scheduling; `workerStats` (any thread) also reads it, for `queue_depth`. Atomic for
    /// that read alone: every access is monotonic, which on x86-64 and AArch64 is the plain load
    /// and store the slot had before (no fence, no RMW). The owner's accesses pair with nothing
    /// (its own program order orders them); the statistics read pairs with nothing either: it
    /// only asks whether a slot is taken, and the coroutine's pointer is never followed there.
    /// Before, that read was a plain one racing the owner's plain stores (a data race, undefined
    /// behaviour in Zig's memory model, reported by ThreadSanitizer).
    lifo: std.atomic.Value(?*Coroutine) = .init(null),
    lifo_streak: u32 = 0,
    /// Owner-only FIFO of coroutines that must wait their turn: those that yielded, those a
    /// timer woke (in deadline order), and a LIFO-slot coroutine that used up its streak.
    fifo_head: ?*Coroutine = null,
    fifo_tail: ?*Coroutine = null,
    fifo_len: u32 = 0,
    tick: u32 = 0,
    rng: u64,
    cache: [cache_max]Stack = undefined,
    cache_len: usize = 0,
    timers: std.PriorityQueue(Timer, void, Timer.order),
    /// Guards `timers`: the owner arms, fires and prunes under it, and the scheduler's
    /// watchdog thread fires the expired timers of a worker stuck in one long run. Never held
    /// across a park or a coroutine switch.
    timer_lock: std.Thread.Mutex = .{},
    /// The heap's earliest deadline (`never` when empty), written under `timer_lock`. Read
    /// without it by the owner (monotonic: its own writes, or a later deadline the watchdog
    /// left; a stale read only costs a look under the lock) and by the watchdog (seq_cst: the
    /// Dekker pair with `Scheduler.watchArmed`).
    next_deadline: std.atomic.Value(u64) = .init(never),
    /// Timers of this heap disarmed early (their coroutine was woken before the deadline), by
    /// whichever thread woke it: their entries stay in the heap until they would fire, so the
    /// owner prunes the heap once they outnumber half of it (`pruneTimers`; Go's
    /// `clearDeletedTimers`). Otherwise a loop of timed waits that end early grows the heap by
    /// one entry per wait until the deadlines pass (hours, under a long withTimeout).
    timers_disarmed: std.atomic.Value(u32) = .init(0),
    /// Owner only: `timers_disarmed` as the last prune check under the lock read it.
    prune_looked: u32 = 0,
    // Written by the owner only (a load and a store, no locked RMW on the hot path), read by
    // `stats` from any thread (monotonic: a snapshot of counters needs no ordering).
    runs: std.atomic.Value(u64) = .init(0),
    steals: std.atomic.Value(u64) = .init(0),
    parks: std.atomic.Value(u64) = .init(0),
    /// Coroutines this worker spawned, and coroutines that finished on it (owner-written, as
    /// above): `liveCount` sums them instead of every spawn contending on one counter, every
    /// `finished` read before `spawned` (`liveIn`; `finished` a release store: `countFinished`).
    spawned: std.atomic.Value(u64) = .init(0),
    finished: std.atomic.Value(u64) = .init(0),
    /// This worker's share of the busy count (see the file header): +1 to `busy_in` for a
    /// coroutine made runnable here or a timer armed here, +1 to `busy_out` for one that parked
    /// or finished here or a timer disarmed or fired here. Owner-written, never decreasing.
    busy_in: std.atomic.Value(u64) = .init(0),
    busy_out: std.atomic.Value(u64) = .init(0),
    /// This worker thread's current-coroutine variable (`coroutine.threadSlot`): the worker
    /// loop runs on the thread's own stack, so it resumes without the thread-local calls.
    slot: *?*Coroutine = undefined,

    /// One more coroutine finished on this worker (`finished`, owner-written).
    fn countFinished(w: *Worker) void {
        // Release: pairs with `liveIn`'s acquire loads of `finished`, which then read the
        // coroutine's count in (`live` or a `spawned`: it happened before this, see there).
        // A plain store on x86; on AArch64 a store-release (no locked instruction).
        w.finished.store(w.finished.load(.monotonic) + 1, .release);
    }

    fn busyAdd(w: *Worker) void {
        // Monotonic: what it counts (a coroutine made runnable) is published after it by a
        // release or seq_cst RMW (the coroutine word's CAS, the queue push), which `drain`
        // reads through before it can see the coroutine run.
        w.busy_in.store(w.busy_in.load(.monotonic) + 1, .monotonic);
    }

    fn busyDone(w: *Worker) void {
        // Release: pairs with `drain`'s acquire loads, so what the coroutine wrote before it
        // parked or finished is visible once `drain` returns. The seq_cst RMW at the start of
        // `idle` orders it before that worker's load of `drainers` (the Dekker pair with
        // `drain`).
        w.busy_out.store(w.busy_out.load(.monotonic) + 1, .release);
    }

    fn random(w: *Worker) u32 {
        // xorshift64*
        w.rng ^= w.rng >> 12;
        w.rng ^= w.rng << 25;
        w.rng ^= w.rng >> 27;
        return @truncate((w.rng *% 0x2545F4914F6CDD1D) >> 32);
    }

    fn main(w: *Worker) void {
        current_worker = w;
        w.slot = coroutine.threadSlot();
        const s = w.sched;
        // Last: counted out of the run for a bounded join (`shutdownWithin`). `s` outlives the
        // thread (it is not the workers' array, which the shutdown frees after the join).
        defer {
            current_worker = null;
            // Release: what this worker did happens before a shutdown that sees the count
            // (its acquire load in `awaitWorkersExited`); the wake pairs with its futex wait.
            _ = s.exited.fetchAdd(1, .release);
            std.Thread.Futex.wake(&s.exited, 1);
        }
        while (s.state.load(.acquire) == .running) {
            if (w.next_deadline.load(.monotonic) != never) {
                const now = monotonicNs();
                if (w.next_deadline.load(.monotonic) <= now) {
                    w.timer_lock.lock();
                    defer w.timer_lock.unlock();
                    w.fireTimers(now);
                }
            }
            // Monotonic: a count that only decides when to look (pruning re-checks each entry).
            // Not under the deadline check: a heap of entries that never expire (deadline
            // maxInt, "forever") publishes `never` and still needs its disarmed entries pruned.
            // Looked at again only when the count moved since the last look (or every 64th
            // pass, for a heap that shrank meanwhile: fired entries, the watchdog's): with as many
            // armed entries as disarmed ones (long timeouts beside early-woken waits) the lock
            // was taken on every pass, ~7 ns a coroutine switch.
            const maybe = w.timers_disarmed.load(.monotonic);
            if (maybe >= prune_min and (maybe != w.prune_looked or w.tick % 64 == 0)) {
                w.timer_lock.lock();
                defer w.timer_lock.unlock();
                // Read again under the lock, where alone it goes down (`countOut`).
                const disarmed = w.timers_disarmed.load(.monotonic);
                w.prune_looked = disarmed;
                if (disarmed >= prune_min and disarmed > w.timers.count() / 2) w.pruneTimers();
            }
            if (w.next()) |co| {
                w.run(co);
            } else {
                w.idle();
            }
        }
    }

    fn next(w: *Worker) ?*Coroutine {
        const s = w.sched;
        w.tick +%= 1;
        if (w.tick % 61 == 0) {
            if (s.inject.pop()) |co| return co;
        }
        if (w.tick % 31 == 0) {
            if (w.popFifo()) |co| return co;
        }
        // Monotonic: the owner's own slot (see `lifo`).
        if (w.lifo.load(.monotonic)) |co| {
            w.lifo.store(null, .monotonic);
            if (w.lifo_streak < s.options.lifo_cap) {
                w.lifo_streak += 1;
                return co;
            }
            // The streak is used up: the slot's coroutine waits its turn behind the others.
            w.pushFifo(co);
        }
        w.lifo_streak = 0;
        if (w.queue.pop()) |co| return co;
        if (w.popFifo()) |co| return co;
        if (s.inject.pop()) |co| return co;
        return w.stealWork();
    }

    /// To the back of the line. Beyond `fifo_max` waiting, to the inject queue instead, where
    /// idle workers can take them (thieves cannot reach this list).
    fn pushFifo(w: *Worker, co: *Coroutine) void {
        if (w.fifo_len >= fifo_max) {
            w.sched.inject.push(co);
            w.sched.notify();
            return;
        }
        co.link = null;
        if (w.fifo_tail) |t| t.link = co else w.fifo_head = co;
        w.fifo_tail = co;
        w.fifo_len += 1;
    }

    fn popFifo(w: *Worker) ?*Coroutine {
        const co = w.fifo_head orelse return null;
        w.fifo_head = co.link;
        if (w.fifo_head == null) w.fifo_tail = null;
        co.link = null;
        w.fifo_len -= 1;
        return co;
    }

    fn stealWork(w: *Worker) ?*Coroutine {
        const s = w.sched;
        const n: u32 = @intCast(s.workers.len);
        if (n < 2) return null;
        // At most half of the workers search at once (seq_cst: a plain counter, any order is
        // fine for a heuristic, but keep it simple to reason about).
        const searching = s.searching.fetchAdd(1, .seq_cst);
        defer assert(s.searching.fetchSub(1, .seq_cst) > 0);
        if (searching * 2 >= n) return null;
        const start = w.random() % n;
        for (0..n) |i| {
            const v = (start + @as(u32, @intCast(i))) % n;
            if (v == w.index) continue;
            const victim = &s.workers[v];
            if (w.queue.stealHalf(&victim.queue)) |co| {
                bump(&w.steals);
                // There is more where that came from: let a sleeping worker help.
                if (w.queue.len() > 0) s.notify();
                return co;
            }
        }
        return null;
    }

    /// Makes `co` run next on this worker. A coroutine it displaces goes to the deque, where
    /// other workers can steal it: only then is a sleeping worker worth waking.
    fn putLifo(w: *Worker, co: *Coroutine) void {
        // Monotonic: the owner's own slot (see `lifo`).
        const displaced = w.lifo.load(.monotonic);
        w.lifo.store(co, .monotonic);
        if (displaced) |prev| {
            w.pushLocal(prev);
            w.sched.notify();
        }
    }

    fn pushLocal(w: *Worker, co: *Coroutine) void {
        if (!w.queue.push(co)) w.sched.inject.push(co);
    }

    fn run(w: *Worker, co: *Coroutine) void {
        const s = w.sched;
        bump(&w.runs);
        // Yielded and woken coroutines wait in the running state (see `resumeYielded`); new
        // ones, and those whose park a permit undid during the switch (ready), need `resume`.
        const state = if (co.exit == .yield or (co.exit == .park and co.getState() == .running))
            co.resumeYieldedFromThread(w.slot)
        else
            co.resumeFromThread(w.slot) catch unreachable; // only runnable coroutines are queued
        switch (state) {
            .suspended => w.pushFifo(co), // yield: to the back of the line
            .ready => w.pushFifo(co), // parked, but an unpark raced in during the switch
            .parked => {
                bump(&w.parks);
                w.busyDone(); // a parked coroutine is not runnable (its timer, if any, counts)
            },
            .finished => {
                if (s.finish_hook) |hook| hook(co);
                co.setContext(ctx_mod.empty);
                const counted = co.finish_counted; // read before its stack (where it lives) goes
                w.releaseStack(co.stack);
                if (@import("builtin").is_test) if (test_hooks.before_count_out) |f| f();
                if (!counted) w.countFinished();
                w.busyDone();
            },
            .created, .running => unreachable, // resume never returns these
        }
    }

    fn idle(w: *Worker) void {
        const s = w.sched;
        // Spin first, counted in `spinning`: a wake-up by futex costs ~23 us here (and the
        // waker a system call), a poll ~60 ns, and while any worker spins `notify` wakes
        // nobody (Go's `nmspinning`). Seq_cst RMWs: the Dekker pair with `notify` below.
        _ = s.spinning.fetchAdd(1, .seq_cst);
        // A `drain` may be waiting for the count this worker just brought down: tell it to look
        // again. Dekker pair with `drain`: our `busy_out` store, the RMW above, this seq_cst
        // load; its seq_cst increment of `drainers`, then its collect. Either it sees our
        // count or we see it waiting.
        if (s.drainers.load(.seq_cst) > 0) s.pingDrain();
        const spin_start = monotonicNs();
        var polls: u32 = 0;
        while (true) : (polls +%= 1) {
            if (s.hasWork(w)) {
                // Work found. If we were the last spinner, a `notify` meanwhile may have
                // skipped waking anyone on our account for work that is not what we found:
                // pass the duty on (Go's `resetspinning`, Tokio's last-searcher rule).
                const spinners = s.spinning.fetchSub(1, .seq_cst);
                assert(spinners > 0);
                if (spinners == 1) s.notify();
                return;
            }
            // A clock read costs ~20 ns, a poll ~60: look at the clock every 16th poll.
            if (polls % 16 == 15 and monotonicNs() -% spin_start >= s.options.spin_ns) break;
            std.atomic.spinLoopHint();
        }
        // Sleep. Dekker pair with `notify`: we count ourselves in `sleepers` and only then out
        // of `spinning` (seq_cst RMWs), and then look for work (seq_cst loads); a submitter
        // publishes work (seq_cst RMW) and then loads `spinning` and `sleepers`. If it saw us
        // spinning (and so woke nobody), our look comes after its publication and sees the
        // work; if it saw us sleeping, it bumps `idle_seq`, which makes our futex wait return
        // at once (we read `idle_seq` before looking); if it saw neither, our increment of
        // `sleepers` came after its load, so our look comes after its publication.
        _ = s.sleepers.fetchAdd(1, .seq_cst);
        defer _ = s.sleepers.fetchSub(1, .seq_cst);
        const spinners = s.spinning.fetchSub(1, .seq_cst);
        assert(spinners > 0);
        const seq = s.idle_seq.load(.seq_cst);
        if (s.hasWork(w)) return;
        // Its own timers only: the watchdog fires those of workers that cannot.
        const deadline = w.next_deadline.load(.monotonic);
        if (deadline != never) {
            const now = monotonicNs();
            if (deadline <= now) return;
            Futex.timedWait(&s.idle_seq, seq, deadline - now) catch {};
        } else {
            Futex.wait(&s.idle_seq, seq);
        }
    }

    fn acquireStack(w: *Worker) Error!Stack {
        if (w.cache_len == 0) {
            const s = w.sched;
            s.pool_mutex.lock();
            defer s.pool_mutex.unlock();
            while (w.cache_len < cache_batch) {
                w.cache[w.cache_len] = s.pool.acquire() catch |e| {
                    if (w.cache_len > 0) break;
                    return switch (e) {
                        error.OutOfMemory => error.OutOfMemory,
                        error.InvalidStackSize => unreachable, // checked at init
                    };
                };
                w.cache_len += 1;
            }
        }
        w.cache_len -= 1;
        return w.cache[w.cache_len];
    }

    fn releaseStack(w: *Worker, st: Stack) void {
        if (w.cache_len == cache_max) {
            const s = w.sched;
            s.pool_mutex.lock();
            defer s.pool_mutex.unlock();
            while (w.cache_len > cache_max - cache_batch) {
                w.cache_len -= 1;
                s.pool.release(w.cache[w.cache_len]);
            }
        }
        w.cache[w.cache_len] = st;
        w.cache_len += 1;
    }

    /// Publishes the heap's earliest deadline. Under `timer_lock`.
    fn publishNext(w: *Worker) void {
        // Seq_cst: the store half of the Dekker pair with the watchdog (`watchArmed`). A swap,
        // not a store, as the watchdog's half is: qemu-user on an x86 host lets an ARM64 seq_cst
        // store pass a later seq_cst load (see `Deque.push`). The `timer_lock` unlock between
        // this and `watchArmed`'s load happens to be an RMW too; the swap does not rely on it.
        _ = w.next_deadline.swap(if (w.timers.peek()) |t| t.deadline else never, .seq_cst);
    }

    /// Drops the entries of timers disarmed since they were armed (their armed word no longer
    /// matches), keeping the others in a heap again, and counts them out of `timers_disarmed`
    /// (each counted itself in before its disarm). Owner only, under `timer_lock`. Before, it
    /// counted out the count read before the scan: a disarm landing between the two (on another
    /// worker, no lock) had its entry dropped but stayed counted, one high for good below
    /// `prune_min`.
    fn pruneTimers(w: *Worker) void {
        const items = w.timers.items;
        var kept: usize = 0;
        for (items) |t| {
            // Acquire: a disarm seen here (or the re-arm after it) pairs with `parkUntil`'s
            // acq_rel disarm CAS (its re-arm's release store), so its count in comes before the
            // count out below. A stale read only keeps an entry that `fireTimers` claims or
            // skips later (the claim is the acq_rel CAS there).
            if (t.co.timer_state.load(.acquire) != t.armed_word) continue;
            items[kept] = t;
            kept += 1;
        }
        const dropped: u32 = @intCast(items.len - kept);
        w.timers.items.len = 0;
        for (0..kept) |i| {
            const t = items.ptr[i]; // read before `add` may move entries below it
            w.timers.add(t) catch unreachable; // capacity kept: `add` allocates nothing
        }
        assert(w.timers.count() == kept);
        w.publishNext();
        w.countOut(dropped);
    }

    /// `n` disarmed entries left the heap: off `timers_disarmed`. Each counted itself in before
    /// its disarm, and whoever drops an entry saw that disarm with acquire (`pruneTimers`,
    /// `fireTimers`; `parkUntil`'s own count out follows its count in), so the count in comes
    /// first: the count never goes below 0 (asserted; saturating all the same). Under
    /// `timer_lock`, the only place the count goes down. Monotonic: a count, ordering nothing.
    fn countOut(w: *Worker, n: u32) void {
        if (n == 0) return;
        var cur = w.timers_disarmed.load(.monotonic);
        while (true) {
            assert(cur >= n);
            cur = w.timers_disarmed.cmpxchgWeak(cur, cur - @min(cur, n), .monotonic, .monotonic) orelse return;
        }
    }

    /// Fires this heap's timers due at `now`, under `timer_lock`: from the owner, between
    /// coroutines (the woken go to its FIFO list), or from the watchdog (to the inject queue).
    fn fireTimers(w: *Worker, now: u64) void {
        const s = w.sched;
        var dropped: u32 = 0;
        while (w.timers.peek()) |t| {
            if (t.deadline > now) break;
            _ = w.timers.remove();
            const co = t.co;
            // Claim the timer: only the holder of the armed word fires it; a coroutine woken
            // some other way disarms it first (acq_rel pairs with `sleep`'s arm and disarm).
            // Acquire on failure too: the disarm seen pairs with `parkUntil`'s acq_rel CAS, so
            // its count in comes before the count out below (`countOut`).
            if (co.timer_state.cmpxchgStrong(t.armed_word, t.armed_word & ~@as(u32, 1), .acq_rel, .acquire) == null) {
                // To the back of the queue, in deadline order (the LIFO slot is for a coroutine
                // woken by the running one).
                _ = s.wakeTo(co, t.gen, s.epoch.load(.monotonic), .queue); // a timer of this run
                s.busyDoneAny(); // the timer itself no longer counts (after the wake counted in)
            } else dropped += 1; // an entry disarmed early: it counted in `timers_disarmed`
        }
        w.publishNext();
        // Those entries are gone: counted out, or the owner would take the lock to look at
        // pruning on every pass once 64 were ever disarmed (review 11).
        w.countOut(dropped);
    }
};

const Inject = struct {
    mutex: std.Thread.Mutex = .{},
    head: ?*Coroutine = null,
    tail: ?*Coroutine = null,
    /// The list's length, changed only under `mutex` (so it never runs below the list: a push
    /// that counted after it let go of the lock had its coroutine popped, and counted out,
    /// before its count in, wrapping the count below 0 for a moment); read without it as a
    /// hint. Seq_cst: the store half of the idle protocol's Dekker pair (see `Worker.idle`).
    len: std.atomic.Value(u32) = .init(0),

    fn push(q: *Inject, co: *Coroutine) void {
        q.mutex.lock();
        defer q.mutex.unlock();
        co.link = null;
        if (q.tail) |t| t.link = co else q.head = co;
        q.tail = co;
        _ = q.len.fetchAdd(1, .seq_cst);
    }

    fn pop(q: *Inject) ?*Coroutine {
        // A hint (the list is read under `mutex`). Acquire: pairs with `push`'s seq_cst
        // increment.
        if (q.len.load(.acquire) == 0) return null;
        q.mutex.lock();
        defer q.mutex.unlock();
        const co = q.head orelse return null;
        q.head = co.link;
        if (q.head == null) q.tail = null;
        co.link = null;
        const before = q.len.fetchSub(1, .monotonic);
        assert(before > 0); // counted in by the push that linked `co`
        return co;
    }
};

pub const Scheduler = struct {
    allocator: std.mem.Allocator,
    options: Options,
    workers: []Worker,
    inject: Inject = .{},
    /// Outside wakers read `state` and `epoch` at any time, also while a restart rebuilds the
    /// rest (`restart`): both are only ever changed atomically, and kept by a restart. Its
    /// release stores (and the seq_cst ones) pair with the acquire loads (`isRunning`, the
    /// workers' loop, the spawns' checks): a reader that sees the new state sees what came
    /// before it (a start's build, a shutdown's `end_hook` and teardown). `shutdown`'s seq_cst
    /// store of `stopping` is also the store half of the one Dekker pair on it, with
    /// `wakeOutside` (its count in `wakers`, then its seq_cst load of this word; `shutdown`
    /// then loads `wakers`). `begin`'s seq_cst store of `running` publishes the run's epoch
    /// to that load (see `epoch`). The idle workers (`hasWork`) and the timer watchdog
    /// (`watchdogMain`) are no Dekker pair: they read their futex word (`idle_seq`,
    /// `watch_seq`) before this one, and `shutdown` bumps it after its store (`wakeAll`,
    /// `wakeWatchdog`), so their load sees `stopping` or their futex wait returns.
    state: std.atomic.Value(enum(u8) { running, stopping, stopped }) = .init(.running),
    /// This run's number (`last_epoch`): what `Ref.epoch` must match for a wake. Stored before
    /// `state` says running (a seq_cst store, which `wakeOutside`'s load pairs with).
    epoch: std.atomic.Value(u32) = .init(0),
    /// Futex word of sleeping workers; bumped by `notify`.
    idle_seq: std.atomic.Value(u32) = .init(0),
    sleepers: std.atomic.Value(u32) = .init(0),
    /// Workers spinning in `Worker.idle` before they sleep: while any does, `notify` wakes
    /// nobody (the spinner will find the work, or pass the duty on).
    spinning: std.atomic.Value(u32) = .init(0),
    searching: std.atomic.Value(u32) = .init(0),
    /// The busy count's share of threads outside the workers (see the file header): +1 to
    /// `ext_in` for each coroutine they make runnable, +1 to `ext_out` for each spawn undone.
    /// Kept by a restart, which stores 0 to both (and to `live`) atomically: `busyCount` (and
    /// `liveCount`) on another thread read them meanwhile.
    ext_in: std.atomic.Value(u64) = .init(0),
    ext_out: std.atomic.Value(u64) = .init(0),
    /// Wakes from outside the workers in flight (`wakeOutside`): a shutdown waits for none
    /// before it unmaps the stacks. Kept by a restart (a waker of the earlier run may still be
    /// counted in it, on its way out).
    wakers: std.atomic.Value(u32) = .init(0),
    /// The timer watchdog (`watchdogMain`), its futex word (bumped by `watchArmed` and by
    /// `shutdown`), and the time it sleeps until (`never`: until woken).
    watchdog: ?std.Thread = null,
    watch_seq: std.atomic.Value(u32) = .init(0),
    watch_until: std.atomic.Value(u64) = .init(never),
    /// Threads in `drain`, and its futex word: bumped by a worker going idle (`pingDrain`).
    /// Kept by a restart, as `wakers` is: a drain that counted itself in after the last
    /// shutdown's wait for none is on its way out (it finds the run over), or finds the new
    /// run going and drains it; either way its count out must find its count in.
    drainers: std.atomic.Value(u32) = .init(0),
    drain_seq: std.atomic.Value(u32) = .init(0),
    /// Futex word of `joinAndFree`'s waits for `wakers` and `drainers` to drop to 0
    /// (`awaitNone`): bumped by a count out of either (`countOut`) only while `quiesce_waiters`
    /// counts a waiter, so that a wake from outside or a drain gains one load and no syscall.
    /// Kept by a restart, as the counts are: a waker or drain of an earlier run on its way out
    /// reads them.
    quiesce_seq: std.atomic.Value(u32) = .init(0),
    quiesce_waiters: std.atomic.Value(u32) = .init(0),
    /// Spawned from outside the workers (and undone spawns, subtracted); see `liveCount`.
    live: std.atomic.Value(u64) = .init(0),
    /// `liveCount` while a shutdown frees the workers (`no_fold`: none): their shares and
    /// `live` together, summed by `joinAndFree` before `dropWorkers` hides the workers from
    /// readers, and cleared by `abandonAll` once it moved that sum to `live`. Before, a reader
    /// in between (for as long as `dropWorkers` waited for a reader inside) read `live` alone:
    /// the outside spawns, finished or not, too high. Kept by a restart (a reader may read it).
    live_folded: std.atomic.Value(u64) = .init(no_fold),
    /// `busyCount`'s the same way: the workers' shares and the outside counts summed as the
    /// workers were hidden. `abandonAll` then zeroes the outside counts (nothing runs once the
    /// workers' array is freed: the coroutines left are abandoned). Before, a reader that
    /// found no workers read the outside counts alone (spawns from outside, counted out on the
    /// workers) until the next restart: busy coroutines after a shutdown that finished them.
    busy_folded: std.atomic.Value(u64) = .init(no_fold),
    /// How many coroutines the last join abandoned: those that never finished, counted once
    /// no worker runs (`joinAndFree`), so a coroutine running as the run stopped that then ran
    /// to its end is not among them. Written under `lifecycle` by the shutdown that joined; read
    /// by its caller after `shutdownBy` returned (the C ABI's kc_sched_abandoned).
    abandoned_at_join: u64 = 0,
    pool_mutex: std.Thread.Mutex = .{},
    pool: stack_mod.Pool,
    /// Serialises shutdown against itself, against spawns from outside the workers and
    /// against `restart` (which keeps it: a holder of the earlier run may still be inside).
    lifecycle: std.Thread.Mutex = .{},
    /// A shutdown holds `lifecycle` (it may hold it for good, joining a worker that never
    /// yields): a bounded shutdown waiting for the lock gives up at its deadline only then,
    /// not while a spawn from outside holds it (briefly). Written under `lifecycle`; read
    /// outside it as a hint (monotonic: nothing is published through it, and the waiter tries
    /// the lock again before it looks).
    lifecycle_shutdown: std.atomic.Value(bool) = .init(false),
    /// Futex word of the bounded shutdowns waiting for `lifecycle` (`shutdownBy`): bumped by a
    /// shutdown's unlock of it (`unlockLifecycle`) and its saying so (`lifecycle_shutdown`),
    /// and by a spawn from outside's unlock only while `lifecycle_waiters` counts a waiter
    /// (`unlockLifecycleSpawn`: no read-modify-write, no syscall on the spawn's path).
    lifecycle_events: std.atomic.Value(u32) = .init(0),
    lifecycle_waiters: std.atomic.Value(u32) = .init(0),
    /// Shutdowns in `shutdownBy` (a count: they may overlap), from before their wait for
    /// `lifecycle` to their return: while it counts one, a spawn from outside is refused
    /// (error.Shutdown) before it takes the lock, as it would be once that shutdown held it
    /// (every shutdown leaves the run stopped, or leaves it to the one holding the lock, which
    /// does). Before, a stream of spawns from outside (two threads in a loop) could keep
    /// retaking the lock between the bounded wait's looks (`tryLock`, then a sleep of up to
    /// 1 ms), holding a `shutdownWithin` past its deadline for as long as they went on (and an
    /// unbounded shutdown's `lock`: the mutex is not fair). Kept by a restart: a shutdown that
    /// found the run stopped (a second call, another thread's) counts itself out after its
    /// unlock, and may do so after a restart that followed the first one's return. Reset to 0
    /// there, its decrement wrapped the count, and every spawn from outside on the new run was
    /// refused for good.
    lifecycle_pending: std.atomic.Value(u32) = .init(0),
    /// Threads reading the workers' counters through the statistics (`workerCount`,
    /// `workerStats`, `liveCount`, `busyCount`: `enterWorkers`), from any thread, also while
    /// another one shuts down or restarts the scheduler: a shutdown (`joinAndFree`) or a failed
    /// `begin` that frees the workers' array says so first (`workers_live`, `dropWorkers`) and
    /// then waits for none. Before, those calls read `workers` unsynchronised, freed under them.
    /// Only readers that found the workers count (one that finds them hidden reads nothing).
    /// Both kept by a restart (a reader of the earlier run may count itself out meanwhile, and
    /// load the flag) and changed atomically only.
    readers: std.atomic.Value(u32) = .init(0),
    /// The workers' array may be read (`enterWorkers`): stored true by `begin` once it is
    /// built, false by `dropWorkers` before it is freed.
    workers_live: std.atomic.Value(bool) = .init(false),
    /// A cancelling shutdown was asked for while a finishing one drains (`cancelPending`): the
    /// drain stops and the rest is abandoned. Release/acquire: a flag, ordering nothing else.
    /// Kept by a restart, which clears it atomically (a cancel of the earlier run may store it
    /// meanwhile).
    cancel_pending: std.atomic.Value(bool) = .init(false),
    /// Worker threads of this run that left their loop (`Worker.main`), and the futex word a
    /// bounded join (`shutdownWithin`) waits on. Reset by a restart (not kept).
    exited: std.atomic.Value(u32) = .init(0),
    /// A bounded shutdown stopped the run but its workers did not all leave in time (one runs
    /// a coroutine that never yields): nothing is freed, `state` stays `stopping`, and the next
    /// `shutdown`/`shutdownWithin` goes on with the join. Under `lifecycle`; atomic for the C
    /// ABI's reads outside it (kc_sched_start refuses to restart meanwhile). Monotonic
    /// accesses: written only under `lifecycle`, whose lock orders what came before.
    join_pending: std.atomic.Value(bool) = .init(false),
    /// A bounded shutdown timed out on the join (`join_pending`, past its deadline): set before
    /// it wakes the threads listed in `outside_waits`, cleared once the join that follows is
    /// done. What they wait for (children that finish, or are abandoned at that join) may never
    /// come: they end their waits with error.Shutdown (`joinLeft`). Written under `lifecycle`;
    /// monotonic: a waiter reads it after listing itself under `outside_mutex`, which the
    /// shutdown takes after its store (a waiter listed after that sees it through the mutex;
    /// one listed before sees it through the release bump of its word, `wakeOutsideWaits`).
    /// Kept by a restart (false then: its join is done): a waiter on a scope of the earlier
    /// run may still read it.
    unjoined: std.atomic.Value(bool) = .init(false),
    /// Threads outside the run blocked on a futex word of something of it (a scope's `events`:
    /// `Scope.waitAll` and `watch` from a thread), each listed while it waits (`OutsideWait`),
    /// for a shutdown that leaves its join pending to wake (`wakeOutsideWaits`). Under
    /// `outside_mutex`. Kept by a restart: a waiter on a scope of an earlier run may still be
    /// listed (its wait ends at once: the scope's children were abandoned).
    outside_mutex: std.Thread.Mutex = .{},
    outside_waits: ?*OutsideWait = null,
    /// Called for every coroutine that finishes, and at shutdown for every one that never
    /// will, before its stack is reused or freed (the C ABI frees the coroutine's handle here).
    finish_hook: ?*const fn (*Coroutine) void = null,
    /// Called at shutdown after every coroutine's `finish_hook` ran and before the stacks (where
    /// the coroutines live) are unmapped: a host whose lookups may still read a coroutine it
    /// found before its handle was freed waits for them here (the C ABI's kc_coro_state), until
    /// the shutdown's deadline (`monotonicNs`; null: none): false if it passed first. The
    /// shutdown then returns error.Timeout with the join done but the stacks still mapped
    /// (`join_stage` `.freed`, `join_pending`): the next shutdown calls the hook again and unmaps.
    unmap_hook: ?*const fn (deadline: ?u64) bool = null,
    /// Where a bounded shutdown that timed out once the workers had left stopped
    /// (`joinAndFree`), and the next shutdown goes on from: `.joined`, the workers joined but
    /// a wake or a drain from outside still inside past its deadline (nothing freed: they read
    /// the workers and the stacks); `.freed`, everything freed but the stacks, its
    /// `unmap_hook` past its deadline (a lookup from outside still reading one). Under
    /// `lifecycle`. `.abandoning`: everything freed but the stacks, and the abandoned
    /// coroutines' cleanups still running on a thread of their own (`abandoner`), one waiting
    /// for a lock another thread holds (a channel's, whose stuck undelivered hook's caller holds
    /// it): the next shutdown waits for that thread, then frees the stacks.
    join_stage: enum { none, joined, abandoning, freed } = .none,
    /// A bounded shutdown's abandon (`releaseAllAbandoned`): the thread that runs the abandoned
    /// coroutines' cleanups, so that the shutdown can give up at its deadline while one of
    /// them waits for a lock with no bound (a channel's: `Cleanup.run` cannot fail). Set from
    /// its spawn until the shutdown that sees it done joins it (`.abandoning` meanwhile), under
    /// `lifecycle`. An unbounded shutdown runs them on its own thread, as before.
    abandoner: ?std.Thread = null,
    /// 1 once `abandoner` is done (release: pairs with `releaseAllAbandoned`'s acquire load:
    /// what its cleanups did and left, `abandon_later` included, is seen), and the futex word
    /// that shutdown waits on.
    abandon_done: std.atomic.Value(u32) = .init(0),
    /// What `abandoner`'s cleanups left for later (`coroutine.later`): moved to the collector
    /// of the shutdown that joins it, which runs it once it let go of its locks.
    abandon_later: coroutine.LaterList = .{},
    /// Called once by `shutdown`, on its thread, with how the scheduler ends (`.finish` if its
    /// drain ran dry, `.cancel` if it abandons what had not: a cancelling shutdown, or one that
    /// cut a finishing one's drain short), before `isRunning` turns false: whoever sees it false
    /// (acquire) sees what the hook did (the C ABI's kc_sched_ended).
    end_hook: ?*const fn (ShutdownMode) void = null,

    /// Creates the scheduler and starts its workers. `s` must stay at this address. For a
    /// scheduler at `s` that ran and shut down, `restart`. error.OutOfMemory also if a worker
    /// or the timer watchdog thread could not start: the threads that did are joined and
    /// everything freed, as a shutdown leaves it (no workers, not running; `shutdown` does
    /// nothing, `restart` may try again); the same for a failed `restart`, and for any other
    /// error of either (options refused, no memory for the workers).
    pub fn start(s: *Scheduler, allocator: std.mem.Allocator, options: Options) Error!void {
        return s.begin(allocator, options, .fresh);
    }

    /// `start` for a scheduler at `s` that ran before and has shut down: an outside waker of
    /// an earlier run may still read its `state`, `epoch`, `wakers` and `quiesce_*`
    /// (`wakeOutside`, `countOut`), and a drain on another thread its `state`, `drainers`,
    /// `drain_seq` and `quiesce_*` (`drainUntil`), and a shutdown on its way out its
    /// `lifecycle_pending`, a thread waiting on a scope of it its `unjoined` and a cancel from
    /// another thread its `cancel_pending` (cleared below), which are kept and changed
    /// atomically only, and a thread waiting on a scope of it the list of outside waits
    /// (`outside_mutex`, `outside_waits`); everything
    /// else is built again. Under `lifecycle` (kept, with the `lifecycle_*` words around it): a
    /// spawn from outside of the earlier run may still hold it (it reads the state under it,
    /// and is refused), and a second shutdown of it (another thread's, finding it stopped).
    /// Before, the restart built the mutex again under such a holder, whose unlock then let go
    /// of a lock it no longer held, and read the fields being rebuilt.
    /// Refused, nothing done, as the C ABI's kc_sched_start refuses: error.Running while a run
    /// goes on (another thread's restart started it first: two threads that each shut down
    /// and restart race so), error.Shutdown while a shutdown's join is pending (a bounded one
    /// timed out, perhaps on another thread: the next `shutdown` joins, then a restart runs).
    /// Before, both were assertions, which such a race tripped (a Debug build panicked; a
    /// release build rebuilt the scheduler under the running workers).
    pub fn restart(s: *Scheduler, allocator: std.mem.Allocator, options: Options) RestartError!void {
        s.lifecycle.lock();
        defer s.unlockLifecycle(); // wakes a bounded shutdown that waits for it meanwhile
        // Under `lifecycle`, which every start and stop of a run holds: what it reads holds
        // until the unlock. Acquire: pairs with the release (and seq_cst) stores of the state,
        // as `isRunning`'s load does, though the lock already orders those made under it.
        if (s.state.load(.acquire) == .running) return error.Running;
        // A bounded shutdown that timed out left workers to join: the next shutdown's.
        // Monotonic: written under `lifecycle`, which we hold.
        if (s.join_pending.load(.monotonic)) return error.Shutdown;
        // Not running and no join pending: the last stop got as far as `stopped`.
        assert(s.state.load(.monotonic) == .stopped);
        assert(s.join_stage == .none); // cleared with `join_pending` (`joinAndFree`)
        assert(s.abandoner == null); // joined before `join_stage` left `.abandoning`
        // Kept, not rebuilt: a thread waiting on a scope of the earlier run reads `unjoined`
        // (`joinLeft`), and a cancel of it from another thread may store `cancel_pending`
        // (`cancelPending`), both without a lock. Before, the rebuild wrote them with plain
        // stores under those atomic accesses (ThreadSanitizer: a data race). `unjoined` was
        // cleared by the join that cleared `join_pending`; a cancel of the earlier run must
        // not cut the new run's first finish short, so that flag starts again here.
        // Monotonic: a flag ordering nothing (see `cancel_pending`), stored under `lifecycle`.
        assert(!s.unjoined.load(.monotonic));
        s.cancel_pending.store(false, .monotonic);
        try s.begin(allocator, options, .again);
        if (@import("builtin").is_test) if (test_hooks.restarted) |f| f();
    }

    /// What `restart` keeps (see there).
    const kept_by_restart = [_][]const u8{ "state", "epoch", "wakers", "drainers", "drain_seq", "quiesce_seq", "quiesce_waiters", "lifecycle", "lifecycle_shutdown", "lifecycle_events", "lifecycle_waiters", "lifecycle_pending", "cancel_pending", "unjoined", "outside_mutex", "outside_waits", "readers", "workers_live", "live", "live_folded", "busy_folded", "ext_in", "ext_out" };
    comptime {
        for (kept_by_restart) |k| assert(@hasField(Scheduler, k));
    }

    fn begin(s: *Scheduler, allocator: std.mem.Allocator, options: Options, how: enum { fresh, again }) Error!void {
        // A fresh start that fails before its run is built (options refused, no memory for the
        // workers' array) leaves what a failed thread leaves below: a scheduler stopped, with
        // no workers (`shutdown` does nothing, `restart` may try again; `pool` is built by
        // that). Before, `s` stayed undefined then, and a `shutdown` or `restart` after the
        // error read garbage. (A restart that fails so leaves the scheduler as it found it.)
        if (how == .fresh) s.* = .{
            .allocator = allocator,
            .options = options,
            .workers = &.{},
            .pool = undefined,
            .state = .init(.stopped),
        };
        var opts = options;
        if (opts.workers == 0) opts.workers = @intCast(std.Thread.getCpuCount() catch 1);
        if (opts.workers > 1024) return error.InvalidArgument;
        if (opts.lifo_cap == 0) return error.InvalidArgument;
        const pool = stack_mod.Pool.init(allocator, .{
            .mode = opts.stack_mode,
            .stack_size = opts.stack_size,
            // Never unmapped while the scheduler runs: a coroutine lives at the top of its
            // stack, and wakers holding a `Ref` (or a handle lookup racing its finish) read its
            // generation word after it may have finished. Type-stable memory makes that read
            // safe; the process-wide budget of guarded stacks (coro/stack.zig) bounds what a
            // burst can keep mapped.
            .max_free = std.math.maxInt(usize),
        }) catch |e| return switch (e) {
            error.InvalidStackSize => error.InvalidArgument,
            error.OutOfMemory => error.OutOfMemory,
        };
        const workers = try allocator.alloc(Worker, opts.workers);
        const built: Scheduler = .{
            .allocator = allocator,
            .options = opts,
            .workers = workers,
            .pool = pool,
            .finish_hook = opts.finish_hook,
            .unmap_hook = opts.unmap_hook,
            .end_hook = opts.end_hook,
            .state = .init(.stopped),
        };
        switch (how) {
            .fresh => s.* = built,
            .again => inline for (std.meta.fields(Scheduler)) |f| {
                const kept = comptime blk: {
                    // Each field's name against every kept one's, letter by letter.
                    @setEvalBranchQuota(10_000);
                    break :blk for (kept_by_restart) |k| {
                        if (std.mem.eql(u8, f.name, k)) break true;
                    } else false;
                };
                if (!kept) @field(s, f.name) = @field(built, f.name);
            },
        }
        if (how == .again) {
            // Kept, and started again atomically: a reader of the statistics on another thread
            // (`liveCount`, `busyCount`) reads them whether or not it finds the workers. Before,
            // the rebuild wrote them with plain stores under those loads (ThreadSanitizer: a data
            // race). Monotonic: `workers_live`'s store below publishes them to a reader that
            // finds the workers; one that does not reads a snapshot of either run.
            s.live.store(0, .monotonic);
            s.ext_in.store(0, .monotonic);
            s.ext_out.store(0, .monotonic);
        }
        // The workers before the state: a drain on another thread (`drainUntil`) that reads
        // `running` (its acquire load pairs with the seq_cst store below) reads their counters
        // next.
        for (workers, 0..) |*w, i| {
            w.* = .{
                .sched = s,
                .index = @intCast(i),
                .rng = 0x9E3779B97F4A7C15 +% @as(u64, i) *% 0xBF58476D1CE4E5B9,
                .timers = .init(allocator, {}),
            };
        }
        // Seq_cst: pairs with `enterWorkers`'s load (its acquire half: a reader that sees true
        // sees `workers` and the array built above); a store of `dropWorkers` is the only
        // other. Before the state, whose store orders nothing for it.
        assert(workers.len != 0); // `enterWorkers` tells a counted reader by a non-empty array
        s.workers_live.store(true, .seq_cst);
        // The epoch before the state: a waker that reads `running` (seq_cst, after the store
        // below) reads this run's epoch, never the last one's.
        s.epoch.store(nextEpoch(), .monotonic);
        s.state.store(.running, .seq_cst);
        var started: usize = 0;
        // A thread that did not start (no memory, no threads left): the run ends as a shutdown
        // with nothing to abandon would end it, and leaves what a shutdown leaves: no workers
        // (`s.workers` empty, so `workerCount` is 0 and the readers of the slice find nothing),
        // the pool freed, the state `stopped` (`shutdown` does nothing, `restart` may run).
        // Before, `s.workers` still pointed at the freed array (`workerStats`, `workerCount`,
        // `liveCount` read freed memory) and the state stayed `stopping`.
        errdefer {
            // Seq_cst: as `stopRun`'s store, the store half of the Dekker pair with a drain on
            // another thread (its count in `drainers`, then its load of `state`): either it
            // sees the run ending and reads no worker, or the wait below sees it counted.
            s.state.store(.stopping, .seq_cst);
            s.wakeAll();
            for (workers[0..started]) |*w| w.thread.?.join();
            // A drain that saw the run going reads the workers' counters: let it leave first,
            // as `joinAndFree` does. No wake from outside can be of this run (no coroutine was
            // spawned on it: a spawn from outside waits for `lifecycle`, held by a restart, and
            // nobody else has a fresh start's scheduler); one of an earlier run finds another
            // epoch and reads nothing.
            s.pingDrain();
            _ = s.awaitNone(&s.drainers, null);
            _ = s.dropWorkers(null); // a reader of the statistics that saw them leaves first
            for (workers) |*w| w.timers.deinit();
            s.workers = &.{};
            allocator.free(workers);
            s.pool.deinit();
            // Release: pairs with the acquire loads of the state (`isRunning`), as `joinAndFree`'s.
            s.state.store(.stopped, .release);
        }
        for (workers, 0..) |*w, i| {
            if (@import("builtin").is_test) if (failThreadForTest(i)) return error.OutOfMemory;
            w.thread = std.Thread.spawn(.{ .stack_size = 256 * 1024 }, Worker.main, .{w}) catch
                return error.OutOfMemory;
            started += 1;
        }
        if (@import("builtin").is_test) if (failThreadForTest(workers.len)) return error.OutOfMemory;
        s.watchdog = std.Thread.spawn(.{ .stack_size = 64 * 1024 }, watchdogMain, .{s}) catch
            return error.OutOfMemory;
    }

    /// The timer watchdog's thread. A worker fires its own timers between coroutines, so one
    /// stuck in a coroutine that computes for a second without parking or yielding would
    /// delay them by that second, even while other workers idle (Go lets idle Ps run other
    /// Ps' timers, and sysmon starts an M for overdue ones). The watchdog sleeps until the
    /// earliest deadline of any worker plus `timer_grace_ns` and fires what is still due then
    /// (the woken go to the inject queue, where idle workers take them). A worker that runs
    /// short coroutines has fired its timers by then: the watchdog wakes, finds a later
    /// deadline, and sleeps again (at most once per grace period while timers keep coming).
    fn watchdogMain(s: *Scheduler) void {
        const grace = s.options.timer_grace_ns;
        while (true) {
            // Read the futex word before looking, the state included: a `watchArmed` or a
            // shutdown's wake after this returns the wait. (The state read first, a shutdown
            // between the two reads left the watchdog waiting for good, and the shutdown joining
            // it: review 11.)
            const seq = s.watch_seq.load(.seq_cst);
            if (s.state.load(.seq_cst) != .running) return;
            const earliest = s.earliestDeadline();
            const now = monotonicNs();
            if (earliest != never and earliest +| grace <= now) {
                for (s.workers) |*w| {
                    // Seq_cst like every load of it here; the lock then orders the heap.
                    if (w.next_deadline.load(.seq_cst) +| grace > now) continue;
                    w.timer_lock.lock();
                    defer w.timer_lock.unlock();
                    w.fireTimers(now);
                }
                continue;
            }
            const until = if (earliest == never) never else earliest +| grace;
            // Seq_cst store, then seq_cst loads of the deadlines: the Dekker pair with
            // `watchArmed` (a worker's seq_cst store of an earlier deadline, then its load of
            // `watch_until`). Either it sees this `until` and wakes us if its deadline needs it
            // sooner, or we see its deadline here and look again. A swap, not a store: qemu-user
            // on an x86 host lets an ARM64 seq_cst store (stlr) pass a later seq_cst load (ldar),
            // which breaks the pair (see `Deque.push`); an RMW is a full barrier there too.
            _ = s.watch_until.swap(until, .seq_cst);
            if (s.earliestDeadline() < earliest) continue;
            if (until == never) {
                Futex.wait(&s.watch_seq, seq);
            } else {
                Futex.timedWait(&s.watch_seq, seq, until - now) catch {};
            }
        }
    }

    fn earliestDeadline(s: *Scheduler) u64 {
        var earliest: u64 = never;
        for (s.workers) |*w| earliest = @min(earliest, w.next_deadline.load(.seq_cst));
        return earliest;
    }

    /// A worker armed a timer earlier than every other in its heap (and published it with a
    /// seq_cst store): wakes the watchdog if it sleeps past `deadline` + grace.
    fn watchArmed(s: *Scheduler, deadline: u64) void {
        // Seq_cst: the load half of the Dekker pair in `watchdogMain`.
        if (deadline +| s.options.timer_grace_ns >= s.watch_until.load(.seq_cst)) return;
        s.wakeWatchdog();
    }

    fn wakeWatchdog(s: *Scheduler) void {
        _ = s.watch_seq.fetchAdd(1, .release);
        Futex.wake(&s.watch_seq, 1);
    }

    /// Creates a coroutine running `entry(arg)` and makes it runnable. From a worker it goes to
    /// that worker's LIFO slot (it runs next); from any other thread to the inject queue.
    /// error.Shutdown once the run is stopped, and from any other thread also while a shutdown
    /// is in progress (`lifecycle_pending`; a coroutine may still spawn while a finish drains).
    /// The new coroutine inherits the spawning coroutine's context (the empty context when
    /// spawned from outside a coroutine).
    pub fn spawn(s: *Scheduler, entry: coroutine.EntryFn, arg: ?*anyopaque) Error!Ref {
        const inherited = if (coroutine.current()) |cur| cur.context else ctx_mod.empty;
        return s.spawnWith(entry, arg, inherited, .{});
    }

    /// Per-spawn options.
    pub const SpawnOptions = struct {
        /// Runs on the new coroutine before it becomes runnable (e.g. to give it a handle); an
        /// error cancels the spawn.
        hook: ?CreateHook = null,
        /// Save FP control state for this coroutine (in addition to the scheduler's default).
        fp_control: bool = false,
    };

    /// Runs on a new coroutine before it becomes runnable (e.g. to give it a handle); an error
    /// cancels the spawn.
    pub const CreateHook = struct {
        f: *const fn (ctx: ?*anyopaque, co: *Coroutine) anyerror!void,
        ctx: ?*anyopaque,
    };

    /// `spawn` with an explicit context (the coroutine takes its own reference) and options.
    pub fn spawnWith(
        s: *Scheduler,
        entry: coroutine.EntryFn,
        arg: ?*anyopaque,
        context: *ctx_mod.Context,
        options: SpawnOptions,
    ) Error!Ref {
        const hook = options.hook;
        const fp = options.fp_control or s.options.fp_control;
        if (thisWorker()) |w| {
            if (w.sched == s) {
                if (s.state.load(.acquire) != .running) return error.Shutdown;
                const st = try w.acquireStack();
                const co = s.makeCoroutine(st, entry, arg, fp);
                co.context = context.retain();
                if (hook) |h| {
                    h.f(h.ctx, co) catch {
                        s.discard(co);
                        w.releaseStack(st);
                        return error.OutOfMemory;
                    };
                }
                const ref = co.ref();
                w.putLifo(co);
                return ref;
            }
        }
        // Monotonic: a hint, ordering nothing. A load that reads 0 stale takes the lock and
        // finds the state as before (a shutdown holding the lock stops the run under it); the
        // spawns after it read the shutdown's increment as soon as it is visible, and stop
        // taking the lock that the shutdown waits for (at most one in flight a thread).
        if (s.lifecycle_pending.load(.monotonic) != 0) return error.Shutdown;
        s.lifecycle.lock();
        defer s.unlockLifecycleSpawn();
        if (@import("builtin").is_test) if (test_hooks.spawn_locked) |f| f();
        if (s.state.load(.acquire) != .running) return error.Shutdown;
        const st = blk: {
            s.pool_mutex.lock();
            defer s.pool_mutex.unlock();
            break :blk s.pool.acquire() catch return error.OutOfMemory;
        };
        const co = s.makeCoroutine(st, entry, arg, fp);
        co.context = context.retain();
        if (hook) |h| {
            h.f(h.ctx, co) catch {
                s.discard(co);
                s.pool_mutex.lock();
                defer s.pool_mutex.unlock();
                s.pool.release(st);
                return error.OutOfMemory;
            };
        }
        const ref = co.ref();
        s.inject.push(co);
        s.notify();
        return ref;
    }

    fn makeCoroutine(s: *Scheduler, st: Stack, entry: coroutine.EntryFn, arg: ?*anyopaque, fp: bool) *Coroutine {
        const co = Coroutine.create(st, entry, arg, .{ .fp_control = fp });
        // Atomic: `kc_coro_unpark` reads it without a lock through a handle that may be stale
        // (its lookup found this stack's previous coroutine); a plain store was a data race
        // (ThreadSanitizer). Monotonic: `Registry.register`'s release store of the handle (the
        // spawn's hook, after this) publishes it to a lookup that finds that handle.
        @atomicStore(?*anyopaque, &co.owner, s, .monotonic);
        co.epoch = s.epoch.load(.monotonic); // stored by `begin`, before the workers started
        if (thisWorker()) |w| {
            if (w.sched == s) bump(&w.spawned) else _ = s.live.fetchAdd(1, .monotonic);
        } else {
            _ = s.live.fetchAdd(1, .monotonic);
        }
        s.busyAddAny(); // runnable from now on
        return co;
    }

    /// Undoes `makeCoroutine` for a coroutine that never became runnable.
    fn discard(s: *Scheduler, co: *Coroutine) void {
        co.discardUnstarted();
        co.setContext(ctx_mod.empty);
        // Wrapping: `liveCount` adds it all up. Release: pairs with `liveIn`'s acquire load of
        // `live`: a reader that sees it down sees the spawn's count in (`spawned`, counted on a
        // worker before this) too, never the undo alone.
        _ = s.live.fetchSub(1, .release);
        s.busyDoneAny();
    }

    /// Makes a parked coroutine of this scheduler runnable (or leaves it a permit). Any thread.
    /// Returns true if it was parked. A stale `ref` (the coroutine finished, or its run ended:
    /// a shutdown, perhaps a restart since) does nothing.
    pub fn unpark(s: *Scheduler, ref: Ref) bool {
        return s.unparkChecked(ref) == .woken;
    }

    /// `unpark`, saying what it did (the C ABI's unpark answers a stale handle): `stale` for a
    /// later coroutine on the stack or a run that ended (its epoch), `not_parked` also when
    /// the run is ending now (a shutdown, which abandons the coroutine).
    pub fn unparkChecked(s: *Scheduler, ref: Ref) coroutine.Unparked {
        if (@import("builtin").is_test) if (test_hooks.before_wake) |f| f();
        return s.wakeTo(ref.co, ref.gen, ref.epoch, .lifo);
    }

    /// The run now (see `epoch`), for a caller that knows its coroutine is of this run.
    pub fn currentEpoch(s: *const Scheduler) u32 {
        return s.epoch.load(.monotonic);
    }

    fn wakeTo(s: *Scheduler, co: *Coroutine, gen: u32, epoch: u32, where: enum { lifo, queue }) coroutine.Unparked {
        // Counted busy after the wake, before it is queued. From a worker, the waker (a
        // running coroutine, or an armed timer) still counts itself, so the count cannot read
        // 0 between. From outside, a `drain` that reads 0 between saw the count before this
        // wake, which is as if the wake came after it.
        if (thisWorker()) |w| {
            if (w.sched == s) {
                // A worker's run is the scheduler's run now (a shutdown joins the workers
                // before it ends it); a `Ref` of an earlier run names a stack it unmapped.
                // Monotonic: stored before this worker started.
                if (epoch != s.epoch.load(.monotonic)) return .stale;
                const did = co.unparkGenQueued(gen);
                if (did != .woken) return did;
                w.busyAdd();
                // No other worker can take a coroutine from this worker's LIFO slot or FIFO
                // list, so waking one for it would only cost a futex wake (and the woken
                // worker's trip back to sleep; ~0.25 us per ChanSync operation): this worker
                // runs it next. Only a coroutine displaced into the deque, where thieves can
                // reach it, is worth a `notify` (Tokio's rule). `pushFifo` notifies itself when
                // it overflows to the inject queue.
                switch (where) {
                    .lifo => w.putLifo(co),
                    .queue => w.pushFifo(co),
                }
                return .woken;
            }
        }
        return s.wakeOutside(co, gen, epoch);
    }

    /// `wakeTo` from a thread that is no worker of this scheduler (see the file header): the
    /// coroutine is read only while this wake is counted in `wakers` and the run it was taken
    /// in still runs, which a shutdown waits out before it unmaps the stacks.
    fn wakeOutside(s: *Scheduler, co: *Coroutine, gen: u32, epoch: u32) coroutine.Unparked {
        // Seq_cst RMW, then the seq_cst load of `state`: the Dekker pair with `shutdown` (its
        // seq_cst store of `stopping`, then its loads of `wakers`). Either we see the run ending
        // and leave without reading the coroutine, or it sees us and waits.
        _ = s.wakers.fetchAdd(1, .seq_cst);
        // What we read and wrote of the coroutine and the queues happens before the shutdown
        // that sees the count drop (`countOut`) unmaps and frees them.
        defer s.countOut(&s.wakers); // our own count in, above
        if (s.state.load(.seq_cst) != .running) return .not_parked;
        // Monotonic: the seq_cst load above read `running` from the store that follows this
        // run's epoch store in `begin` (or from an earlier run, whose epoch then still holds:
        // its shutdown waits for us before a restart can change it).
        if (s.epoch.load(.monotonic) != epoch) return .stale;
        if (@import("builtin").is_test) if (test_hooks.in_wake) |f| f();
        const did = co.unparkGenQueued(gen);
        if (did != .woken) return did;
        // Seq_cst, before the push: the worker that runs it counts it out after taking it from
        // the inject queue, and `drain` reads outs before ins (see `collectBusy`).
        _ = s.ext_in.fetchAdd(1, .seq_cst);
        s.inject.push(co);
        s.notify();
        return .woken;
    }

    /// From a coroutine of this scheduler: sleeps at least `ns` nanoseconds.
    pub fn sleep(s: *Scheduler, ns: u64) Error!void {
        const deadline = monotonicNs() +| ns;
        while (!try s.parkUntil(deadline)) {
            if (monotonicNs() >= deadline) return;
        }
    }

    /// From a coroutine of this scheduler: parks until unparked or until `deadline`
    /// (CLOCK_MONOTONIC ns). Returns true if the deadline woke it. Like `park`, it may also
    /// return early for no reason (a stray permit): callers re-check their condition.
    pub fn parkUntil(s: *Scheduler, deadline: u64) Error!bool {
        const w = thisWorker() orelse return error.NotInCoroutine;
        if (w.sched != s) return error.NotInCoroutine;
        const co = coroutine.current() orelse return error.NotInCoroutine;
        // Arm: next generation, armed bit set. The heap is this worker's own and only this
        // thread fires it, which it cannot do before we have parked. Release pairs with the
        // acq_rel claim in `fireTimers`.
        const old = co.timer_state.load(.monotonic);
        const armed = ((old >> 1) +% 1) << 1 | 1;
        co.timer_state.store(armed, .release);
        // The armed timer counts until fired or disarmed: counted before the watchdog can see
        // it (it may fire it before we park), so its count out never comes first.
        w.busyAdd();
        w.timer_lock.lock();
        w.timers.add(.{ .deadline = deadline, .co = co, .gen = co.generation(), .armed_word = armed }) catch {
            w.timer_lock.unlock();
            co.timer_state.store(armed & ~@as(u32, 1), .monotonic);
            w.busyDone();
            return error.OutOfMemory;
        };
        const earliest = deadline < w.next_deadline.load(.monotonic);
        if (earliest) w.publishNext();
        w.timer_lock.unlock();
        if (earliest) s.watchArmed(deadline);
        // A watchdog that fired the timer already left a permit: the park returns at once.
        coroutine.park() catch unreachable; // we are a coroutine
        // Whoever disarms the timer owns its busy count: either we do it here (woken before
        // the deadline; perhaps on another worker now), or `fireTimers` did (acq_rel pairs
        // with its claim). Monotonic load: only saves the count below when the timer fired
        // (the claim happens before the wake that let us run); the CAS decides.
        if (co.timer_state.load(.monotonic) == armed) {
            // Counted in before the disarm: `w` armed it and holds its entry (we may run on
            // another worker now), and a `fireTimers` (the watchdog's) may drop the entry as
            // soon as the CAS lands, counting it out. Counted after, the count out found it
            // missing (saturating at 0) and the count stayed one high for good: below
            // `prune_min`, nothing prunes. Monotonic: a count that only tells the owner when
            // to prune; the CAS's release half orders it before the count out of whoever sees
            // the disarm (with acquire: `fireTimers`, `pruneTimers`).
            _ = w.timers_disarmed.fetchAdd(1, .monotonic);
            if (co.timer_state.cmpxchgStrong(armed, armed & ~@as(u32, 1), .acq_rel, .monotonic) == null) {
                if (@import("builtin").is_test) if (test_hooks.after_disarm) |f| f();
                s.busyDoneAny();
                co.wake_status = wake_ok;
                return false;
            }
            // A fire claimed it between the load and the CAS (a wake by permit, the watchdog
            // firing meanwhile): it counted nothing out for it, so we do (under the lock, as
            // every count out).
            w.timer_lock.lock();
            defer w.timer_lock.unlock();
            w.countOut(1);
        }
        co.wake_status = wake_timeout;
        return true;
    }

    /// Blocks the calling thread (not a worker) until no coroutine is runnable, running or
    /// waiting on a timer.
    pub fn drain(s: *Scheduler) Error!void {
        s.drainUntil(null) catch |e| switch (e) {
            error.Timeout => unreachable, // no deadline
            else => |other| return other,
        };
    }

    /// `drain` with a bound: error.Timeout if the scheduler is still busy after `timeout_ns`.
    pub fn drainFor(s: *Scheduler, timeout_ns: u64) (Error || error{Timeout})!void {
        return s.drainUntil(monotonicNs() +| timeout_ns);
    }

    fn drainUntil(s: *Scheduler, deadline: ?u64) (Error || error{Timeout})!void {
        if (thisWorker()) |w| {
            // A worker would wait for itself (it counts busy while it runs the caller): never
            // done, and with a deadline it would hold its worker's thread until then.
            if (w.sched == s) return error.InvalidArgument;
        }
        // Seq_cst RMW: the Dekker pair with the idle workers' `drainers` load (`Worker.idle`).
        _ = s.drainers.fetchAdd(1, .seq_cst);
        // `shutdown` waits for 0 (`countOut`). Never below 0: our count in, above, which a
        // restart keeps (before, it reset the count while a drain that came after the last
        // shutdown's wait still held it: this decrement then found 0).
        defer s.countOut(&s.drainers);
        if (@import("builtin").is_test) if (test_hooks.drain_counted) |f| f();
        while (true) {
            // Read the futex word before counting: a ping after the count wakes the wait.
            const seq = s.drain_seq.load(.seq_cst);
            if (s.state.load(.acquire) != .running) return error.Shutdown;
            if (s.stableBusy()) |b| {
                if (b == 0) return;
            }
            // Busy, or changing under us (whoever changed it goes idle and pings afterwards).
            if (deadline) |d| {
                const now = monotonicNs();
                if (now >= d) return error.Timeout;
                Futex.timedWait(&s.drain_seq, seq, d - now) catch {};
            } else Futex.wait(&s.drain_seq, seq);
        }
    }

    const BusyTotals = struct { in: u64, out: u64 };

    /// Every share of the busy count, outs first: a coroutine counted out (parked, finished)
    /// after it was counted in elsewhere is then seen counted in too (acquire loads pair with
    /// the release stores in `busyDone`; the count in happens before the wake that let the
    /// coroutine run).
    fn collectBusy(s: *Scheduler, workers: []Worker) BusyTotals {
        var t: BusyTotals = .{ .in = 0, .out = s.ext_out.load(.acquire) };
        for (workers) |*w| t.out +%= w.busy_out.load(.acquire);
        if (@import("builtin").is_test) if (test_hooks.between_count_reads) |f| f();
        t.in = s.ext_in.load(.acquire);
        for (workers) |*w| t.in +%= w.busy_in.load(.acquire);
        return t;
    }

    /// The busy count if two collects agree (every counter only grows, so equal sums mean
    /// no counter moved: they held these values together between the collects), null if
    /// something changed meanwhile.
    fn stableBusy(s: *Scheduler) ?u64 {
        // `drainUntil`'s: counted in `drainers`, which a shutdown waits for before it frees.
        const a = s.collectBusy(s.workers);
        const b = s.collectBusy(s.workers);
        if (a.in != b.in or a.out != b.out) return null;
        assert(a.in >= a.out);
        return a.in - a.out;
    }

    /// The busy count now (a snapshot for statistics; exact when nothing runs).
    pub fn busyCount(s: *Scheduler) u64 {
        const workers = s.enterWorkers();
        defer s.leaveWorkers(workers);
        if (workers.len == 0) {
            // Acquire: as in `liveCount` (pairs with `abandonAll`'s release store).
            const folded = s.busy_folded.load(.acquire);
            if (folded != no_fold) return folded;
        }
        const t = s.collectBusy(workers);
        return t.in -| t.out;
    }

    /// The workers' array for a reader of the statistics, on any thread (a worker's too): empty
    /// once a shutdown (or a failed `begin`) is about to free it (`dropWorkers`), or before any
    /// run. Until `leaveWorkers`, which must follow (also after an empty one), the array stays.
    /// A reader that finds none is not counted in `readers` (it reads nothing), so that
    /// readers in a loop on other threads, finding none, cannot hold up a shutdown's wait for
    /// none (`dropWorkers`): only those that counted themselves in before the workers were
    /// hidden are waited for, each once. Before, every reader counted itself in first, and a
    /// statistics loop on another thread (`kc_sched_info` polled) kept the count above 0 at
    /// most of the wait's looks: an untimed shutdown waited for as long as the loop ran.
    fn enterWorkers(s: *Scheduler) []Worker {
        // A look before counting in. Acquire: pairs with `dropWorkers`' seq_cst store of false
        // (its release half: the sums `joinAndFree` stored before it, `live_folded` and
        // `busy_folded`, are seen by a reader that reads false here) and with `begin`'s of
        // true (only a hint here: the load below decides).
        if (!s.workers_live.load(.acquire)) return s.foundNoWorkers();
        // Seq_cst RMW, then seq_cst load: the Dekker pair with `dropWorkers` (its store of
        // false, then `awaitNone`'s seq_cst load of `readers`). Either it sees us counted and
        // waits, or we see false and read nothing. The load's acquire half pairs with `begin`'s
        // store of true: `workers` and the array are built. Never below 0 on the way out
        // (`countOut`): the count is kept by a restart.
        _ = s.readers.fetchAdd(1, .seq_cst);
        if (!s.workers_live.load(.seq_cst)) {
            // Hidden since the look above: out again at once (waking the shutdown's wait), so
            // that the caller holds nothing. At most once per reader and shutdown: its next
            // look above reads false.
            s.countOut(&s.readers);
            return s.foundNoWorkers();
        }
        // Never empty while they may be read (`begin` stores true after building at least
        // one): `leaveWorkers` tells a counted reader by its non-empty array.
        assert(s.workers.len != 0);
        return s.workers;
    }

    /// `enterWorkers`' answer for a reader that is not counted in `readers`.
    fn foundNoWorkers(_: *Scheduler) []Worker {
        if (@import("builtin").is_test) if (test_hooks.found_no_workers) |f| f();
        return &.{};
    }

    /// After `enterWorkers`, with what it returned: counts a reader that found the workers out
    /// (one that found none was not counted).
    fn leaveWorkers(s: *Scheduler, workers: []Worker) void {
        if (workers.len != 0) s.countOut(&s.readers); // wakes a `dropWorkers` waiting for none
    }

    /// Before the workers' array is freed, with no worker running: readers of the statistics
    /// find none from here on (`enterWorkers`), and those inside leave first. False if
    /// `deadline` (null: none) passed first; the flag stays false meanwhile.
    fn dropWorkers(s: *Scheduler, deadline: ?u64) bool {
        // Seq_cst: the store half of the Dekker pair with `enterWorkers`.
        s.workers_live.store(false, .seq_cst);
        return s.awaitNone(&s.readers, deadline);
    }

    /// +1 from any thread: to this worker's share on a worker of this scheduler.
    fn busyAddAny(s: *Scheduler) void {
        if (thisWorker()) |w| {
            if (w.sched == s) return w.busyAdd();
        }
        _ = s.ext_in.fetchAdd(1, .seq_cst);
    }

    /// -1 from any thread (a coroutine may have moved to another worker since its +1).
    fn busyDoneAny(s: *Scheduler) void {
        if (thisWorker()) |w| {
            if (w.sched == s) return w.busyDone();
        }
        s.extDone();
    }

    fn extDone(s: *Scheduler) void {
        // Seq_cst RMW then seq_cst load: the Dekker pair with `drain`, as in `Worker.idle`
        // (no worker need go idle after a count brought down from outside).
        _ = s.ext_out.fetchAdd(1, .seq_cst);
        if (s.drainers.load(.seq_cst) > 0) s.pingDrain();
    }

    /// Counts a wake from outside, a drain or a reader of the statistics out of `counter`
    /// (`wakers`, `drainers`, `readers`: counted in by the caller), waking `joinAndFree`'s (or a
    /// failed `begin`'s) wait for it (`awaitNone`).
    fn countOut(s: *Scheduler, counter: *std.atomic.Value(u32)) void {
        // Seq_cst, with the load below: a Dekker pair with `awaitNone` (its increment of
        // `quiesce_waiters`, then its load of the count). Either it sees the count drop (and
        // does not sleep) or we see it counted (and wake it). Its release half: what the caller
        // read and wrote of the run happens before the shutdown that sees the count drop (its
        // seq_cst load, whose acquire half pairs with this) frees it. Not weaker: a release
        // decrement and a monotonic load below is the store-buffering shape, where the load may
        // read 0 before the decrement is visible to `awaitNone`, whose load of the count then
        // reads it still counted; both miss, and an unbounded shutdown's `Futex.wait` sleeps
        // for good (`unlockLifecycleSpawn` may miss only because its waiter's sleeps are timed).
        // Nor does it cost a full barrier more on ARM64: the RMW is LDADDAL (LDAXR/STLXR without
        // LSE) and the load LDAR, which ARMv8 keeps after an earlier store-release with no DMB;
        // the weaker pair would be LDADDL and LDR. On x86-64 both are LOCK SUB and MOV.
        assert(counter.fetchSub(1, .seq_cst) > 0);
        if (s.quiesce_waiters.load(.seq_cst) != 0) {
            // Release: pairs with `awaitNone`'s acquire load of the word (seq_cst there).
            _ = s.quiesce_seq.fetchAdd(1, .release);
            Futex.wake(&s.quiesce_seq, std.math.maxInt(u32));
        }
    }

    /// Waits until `counter` (`wakers`, `drainers` or `readers`) is 0. A few yields (a wake or a
    /// drain's last look is short), then a futex sleep on `quiesce_seq` woken by a count out
    /// (`countOut`): before, it yielded for as long as the waker's or drain's thread was
    /// preempted, starved or stopped in a debugger, a core kept busy in a shutdown. With no
    /// bound but `deadline` (a bounded shutdown's; null: none): false if it passed first. What
    /// it waits for reads the stacks and the workers' counters it frees next.
    fn awaitNone(s: *Scheduler, counter: *std.atomic.Value(u32), deadline: ?u64) bool {
        var spins: u32 = 0;
        while (true) {
            if (@import("builtin").is_test) _ = quiesce_looks.fetchAdd(1, .monotonic); // a count
            // Acquire (seq_cst for the pair in `countOut`): read before the count below, so
            // that a count out's bump after it makes the futex wait return at once.
            const seq = s.quiesce_seq.load(.seq_cst);
            // Seq_cst: the load half of the Dekker pairs with `wakeOutside`'s and
            // `drainUntil`'s count in (they then load `state`), with `enterWorkers`'s (it then
            // loads `workers_live`) and with `countOut`.
            if (counter.load(.seq_cst) == 0) return true;
            if (@import("builtin").is_test) if (counter == &s.wakers) if (test_hooks.wakers_pending) |f| f();
            const now = monotonicNs();
            if (deadline) |d| if (now >= d) return false;
            if (spins < 8) {
                spins += 1;
                std.Thread.yield() catch {};
                continue;
            }
            // Seq_cst: the other half of `countOut`'s Dekker pair, counted before the count is
            // read again; the decrement is a count only.
            _ = s.quiesce_waiters.fetchAdd(1, .seq_cst);
            defer _ = s.quiesce_waiters.fetchSub(1, .monotonic);
            if (counter.load(.seq_cst) == 0) return true;
            if (deadline) |d| {
                Futex.timedWait(&s.quiesce_seq, seq, d - now) catch {};
            } else Futex.wait(&s.quiesce_seq, seq);
        }
    }

    /// A shutdown lets go of `lifecycle`, waking the bounded shutdowns waiting for it
    /// (`shutdownBy`): never a missed wake (the Dekker pair in `bumpLifecycle`).
    fn unlockLifecycle(s: *Scheduler) void {
        s.lifecycle.unlock();
        s.bumpLifecycle();
    }

    /// A spawn from outside lets go of `lifecycle` (`spawnWith`): a plain load when nobody
    /// waits. Before, it bumped the futex word with a seq_cst read-modify-write at every
    /// spawn (`zig build bench`, "spawn from a thread outside the workers": ~+35 ns min,
    /// ~+100 ns median on a loaded 2-CPU host).
    fn unlockLifecycleSpawn(s: *Scheduler) void {
        s.lifecycle.unlock();
        // Monotonic, no store-load fence after the unlock: this load may read a stale 0 while
        // a waiter has just counted itself (its seq_cst increment in `shutdownBy`) and its
        // `tryLock` saw the lock still held, so that nobody bumps and it sleeps on. That
        // missed wake is the one allowed: the waiter's sleep after an unlock-by-spawn is a
        // timed one with a bounded backoff (`lifecycle_backoff_min_ns` doubling to
        // `lifecycle_backoff_max_ns`), so it looks again at most that late. When the load
        // reads the count, the bump is `bumpLifecycle`'s (seq_cst, wakes for sure).
        if (s.lifecycle_waiters.load(.monotonic) != 0) s.bumpLifecycle();
    }

    /// Wakes the bounded shutdowns waiting for `lifecycle` to look again: at an unlock, and
    /// when a shutdown holding it says so (`lifecycle_shutdown`), past which they give up.
    fn bumpLifecycle(s: *Scheduler) void {
        // Seq_cst, with the load below: a Dekker pair with `shutdownBy`'s wait (its increment
        // of `lifecycle_waiters`, then the futex wait's compare of this word). Either its
        // compare sees the new value (it does not sleep) or we see it counted (and wake it).
        // Its release half publishes the unlock (or `lifecycle_shutdown`) to a waiter whose
        // seq_cst load of the word reads the bump.
        _ = s.lifecycle_events.fetchAdd(1, .seq_cst);
        if (s.lifecycle_waiters.load(.seq_cst) != 0) Futex.wake(&s.lifecycle_events, std.math.maxInt(u32));
    }

    fn pingDrain(s: *Scheduler) void {
        _ = s.drain_seq.fetchAdd(1, .release);
        Futex.wake(&s.drain_seq, std.math.maxInt(u32));
    }

    /// Wakes one sleeping worker if any sleeps. The caller has just published work with a
    /// seq_cst store (see `Worker.idle`).
    fn notify(s: *Scheduler) void {
        // Seq_cst loads: the load half of the Dekker pair with `Worker.idle`.
        if (s.spinning.load(.seq_cst) > 0) return;
        if (s.sleepers.load(.seq_cst) == 0) return;
        _ = s.idle_seq.fetchAdd(1, .release);
        Futex.wake(&s.idle_seq, 1);
    }

    fn wakeAll(s: *Scheduler) void {
        _ = s.idle_seq.fetchAdd(1, .release);
        Futex.wake(&s.idle_seq, std.math.maxInt(u32));
    }

    fn hasWork(s: *Scheduler, w: *Worker) bool {
        if (s.state.load(.seq_cst) != .running) return true;
        if (s.inject.len.load(.seq_cst) > 0) return true;
        // Monotonic: `w` is this thread's own worker (see `lifo`).
        if (w.lifo.load(.monotonic) != null or w.fifo_head != null) return true;
        const deadline = w.next_deadline.load(.monotonic);
        if (deadline != never and deadline <= monotonicNs()) return true;
        for (s.workers) |*v| {
            if (v.queue.len() > 0) return true;
        }
        return false;
    }

    /// Coroutines spawned and not finished (a snapshot; exact when nothing runs). One that
    /// tells others it ended (a scope's child, `countFinishedNow`; a built-in, before its `done`
    /// cell) is counted out before they can learn it: whoever saw its end sees it gone from here
    /// too. So is one a shutdown abandons (`releaseAbandoned`): 0 once it returned.
    /// While a shutdown frees the workers, the count it summed as it hid them (`live_folded`).
    pub fn liveCount(s: *Scheduler) u64 {
        const workers = s.enterWorkers();
        defer s.leaveWorkers(workers);
        if (workers.len == 0) {
            // Acquire: pairs with `abandonAll`'s release store of `no_fold` (then `live` holds
            // the sum). A sum stored by `joinAndFree` is published to a reader that found no
            // workers by `dropWorkers`' seq_cst store of `workers_live` after it.
            const folded = s.live_folded.load(.acquire);
            if (folded != no_fold) return folded;
        }
        return s.liveIn(workers);
    }

    /// `live_folded`'s "none".
    const no_fold = std.math.maxInt(u64);

    /// The counts out first (every worker's `finished`), then the counts in (`live`, every
    /// `spawned`): a coroutine seen counted out is then seen counted in, so the sum is never
    /// below 0, nor below the count at the instant between the two halves (one live then was
    /// counted in before the second half and out, if at all, after the first), and it counts
    /// only coroutines live at some instant of the reads. Not "below the count at the end":
    /// a spawn counted in a `spawned` already read is missed. Before, `live` was read first:
    /// coroutines spawned from outside after that read and finished before the workers' were read
    /// counted out only, a figure wrapped below 0 (2^64 - 4 under qemu, in the statistics test).
    fn liveIn(s: *Scheduler, workers: []Worker) u64 {
        var out: u64 = 0;
        // Acquire: pairs with `countFinished`'s release store. A coroutine's count in (its
        // spawn's increment of `live` or of its spawner's `spawned`) happens before its count
        // out: the spawn then queued it (the inject queue's mutex, the deque's release push,
        // or the spawner's own thread), and the worker that ran it took it from there (the
        // mutex, the deque's acquire steal), then counted it out. So the loads below read that
        // count in, or a later value (read-read coherence).
        for (workers) |*w| out +%= w.finished.load(.acquire);
        if (@import("builtin").is_test) if (test_hooks.between_count_reads) |f| f();
        // Acquire: pairs with `discard`'s release decrement. A spawn undone from a worker was
        // counted in that worker's `spawned` before `live` went down: read it too.
        var in = s.live.load(.acquire);
        for (workers) |*w| in +%= w.spawned.load(.monotonic);
        // Wrapping: `live` alone may be below 0 (spawns counted in `spawned` and undone in
        // `live`), never the sum.
        return in -% out;
    }

    /// Called by a coroutine of a scheduler as the last thing it does that others can see,
    /// right before it tells them it ended (a scope's child, before its scope's `live` drops,
    /// which a waiter of the scope, a TypeScript `coroutineScope` among them, acts on): counts
    /// it finished now, so that `liveCount` no longer counts it by the time anyone learns of
    /// its end. Its worker, which counts a coroutine out after its entry returned, then does
    /// not count it again. The coroutine must not park after this (it would be counted out
    /// while it could still run); nothing for code that is not a scheduled coroutine, nor a
    /// second time (a built-in that counted itself out before its `done` cell, then its scope's
    /// `main`). One owner-written store on the worker's own counter, as the worker's count is.
    pub fn countFinishedNow() void {
        const co = coroutine.current() orelse return;
        const w = thisWorker() orelse return;
        if (co.owner != @as(?*anyopaque, w.sched)) return; // a hand-driven one resumed here
        if (co.finish_counted) return; // counted out already
        co.finish_counted = true;
        // The caller's next step publishes it (the scope's seq_cst decrement of `live`, or a
        // built-in's release write of its `done` cell, which a waiter reads with acquire
        // before it reads the counters). `countFinished`'s release: its count in first.
        w.countFinished();
    }

    /// Worker threads (`Options.workers`, one per CPU if that was 0).
    pub fn workerCount(s: *Scheduler) usize {
        const workers = s.enterWorkers();
        defer s.leaveWorkers(workers);
        return workers.len;
    }

    /// Counters of worker `index`, read without stopping it; null for an index at or past
    /// `workerCount` (every index once the scheduler is shut down, or after a failed `start`
    /// or `restart`: there are no workers then). Before, such an index read past the array (a
    /// panic in a safe build; in a release build whatever lay there).
    /// Safe while another thread shuts the scheduler down or restarts it (`enterWorkers`).
    pub fn workerStats(s: *Scheduler, index: usize) ?WorkerStats {
        const workers = s.enterWorkers();
        defer s.leaveWorkers(workers);
        if (index >= workers.len) return null;
        if (@import("builtin").is_test) if (test_hooks.stats_reading) |f| f();
        const w = &workers[index];
        return .{
            .runs = w.runs.load(.monotonic),
            .steals = w.steals.load(.monotonic),
            .parks = w.parks.load(.monotonic),
            // Monotonic: a statistic read while the owner runs (see `lifo`): taken or not
            // as of some moment, like the deque's length beside it.
            .queue_depth = w.queue.len() + @intFromBool(w.lifo.load(.monotonic) != null),
        };
    }

    /// From any thread, without waiting: a finishing shutdown in progress stops draining and
    /// abandons the rest (the caller then calls `shutdown(.cancel)`, which waits for it).
    pub fn cancelPending(s: *Scheduler) void {
        s.cancel_pending.store(true, .release);
    }

    /// Stops the workers (joins them) and frees everything, the stacks of coroutines that never
    /// finished included (`.cancel`, or parked with no timer after `.finish` drained): they are
    /// abandoned, not unwound. Never from a coroutine of this scheduler: it would join its own
    /// thread, so it panics at once, in every build mode, with a message that names the misuse
    /// (the C ABI refuses it with KC_EINVAL). A panic rather than an error: `shutdown` is the
    /// teardown that `defer` runs, where no error can go, and a coroutine has nothing to do
    /// with one but stop; its own thread cannot be stopped from inside. A second call does
    /// nothing; a spawn after it is error.Shutdown (and `workerStats` is null: no workers).
    /// The scheduler at `s` may run again with `restart` (not `start`: see there).
    pub fn shutdown(s: *Scheduler, mode: ShutdownMode) void {
        s.shutdownBy(mode, null) catch unreachable; // no bound: no timeout
    }

    /// `shutdown` with a bound of `timeout_ns` (null: none) on all of its waits together
    /// (`shutdownBy`, by the deadline `timeout_ns` from now).
    pub fn shutdownWithin(s: *Scheduler, mode: ShutdownMode, timeout_ns: ?u64) error{Timeout}!void {
        return s.shutdownBy(mode, if (timeout_ns) |t| monotonicNs() +| t else null);
    }

    /// `shutdown` by `deadline` (`monotonicNs`; null: none), one deadline that all of its waits
    /// share: the lifecycle lock (another shutdown may hold it while it drains or joins), a
    /// finish's drain (until shortly before the deadline, `joinReserve`, past which the rest is
    /// abandoned, as a cancel would, and the run ends as cancelled) and the join of the
    /// workers. Before, each wait had a bound of its own from when it began, so that one call
    /// could take about three times its bound.
    /// error.Timeout if a worker did not leave its loop in time (it runs a coroutine that never
    /// yields, and cannot be stopped from outside): the run is stopped (`isRunning` false,
    /// `end_hook` called, spawns refused) but nothing is joined or freed, since that worker
    /// still runs on the coroutine's stack and reads the scheduler; `join_pending` says so, a
    /// `restart` is refused (error.Shutdown), and the next `shutdown`, `shutdownWithin` or
    /// `shutdownBy` (either mode: the outcome was decided) goes on with the join and frees
    /// everything. What it would free stays allocated until then: leaked on purpose, never
    /// freed under a running worker. A process may also just end then (its exit ends the
    /// thread). Also error.Timeout if the `unmap_hook` waited past the deadline: joined and
    /// freed but for the stacks (`join_stage`), which the next shutdown unmaps, `join_pending`
    /// kept meanwhile; if the abandoned coroutines' cleanups, on a thread of their own, were
    /// not done by then (one waits for a channel lock a stuck hook's caller holds:
    /// `releaseAllAbandoned`), the same but for the stacks and that thread, which the next
    /// shutdown waits for; and if a wake from outside (`unpark`) or a drain on another thread is
    /// still inside at the deadline (their threads starved, or stopped in a debugger): the
    /// workers joined, nothing freed, the next shutdown goes on from there. Also error.Timeout
    /// if another thread's shutdown held the lifecycle lock past the deadline (that shutdown
    /// goes on, and stops the run if it had not yet); a spawn from
    /// outside that holds it (briefly) is waited for, past the deadline too, and so is a
    /// `restart` on another thread (which holds it while it starts the new run: this call then
    /// shuts that run down, its deadline perhaps past; the C ABI orders starts and shutdowns
    /// under its own lock, so this is for Zig callers only). Past the deadline so, it stops the
    /// run and its join waits no longer: error.Timeout with the join pending, as above (the
    /// next shutdown joins; a `restart` meanwhile is error.Shutdown), unless every worker had
    /// already left at its first look (then joined and freed). Spawns from outside are refused
    /// (error.Shutdown) from the call's start (`lifecycle_pending`): only those in flight then
    /// are waited for. What the abandoned coroutines' cleanups leave for later (a value an
    /// abandoned receive got, to its channel's undelivered hook) runs before it returns, also
    /// past the deadline (behind a stuck hook's caller holding that channel's lock), unless the
    /// caller collects it (the C ABI's shutdown, which bounds it): it names the channel, which
    /// need only outlive the shutdown.
    pub fn shutdownBy(s: *Scheduler, mode: ShutdownMode, deadline: ?u64) error{Timeout}!void {
        // Before the lock: a finishing shutdown on another thread holds it while it drains,
        // and waits for this coroutine, which would wait on the lock for good.
        if (thisWorker()) |w| if (w.sched == s) std.debug.panic(
            "Cannot shut down a scheduler from one of its own coroutines: it would join the " ++
                "thread running the call, received shutdown(.{s}) on worker {d}; call it from " ++
                "a thread outside the scheduler",
            .{ @tagName(mode), w.index },
        );
        // What the abandoned coroutines' cleanups leave for later (`coroutine.later`: a value
        // a receive got, to its channel's undelivered hook) runs once the lifecycle lock is let
        // go (defers run in reverse), so that a hook may spawn on or shut down this scheduler.
        // A caller that collects them itself (around this call) runs them after its own locks.
        // To their end, also for a bounded call (not `endBy`'s thread, left running past the
        // deadline): a step here (`Channel.dropAbandoned`'s copy) names its channel by pointer,
        // holding no reference, and the channel need only outlive the shutdown (README), so a
        // step left running past the return could drop into a channel its caller had freed.
        // The C ABI collects around this call, and bounds its own steps (`shutdownOf`): each
        // holds a reference to its channel (`AbandonedEnd`).
        var later: coroutine.LaterList = .{};
        const collecting = later.begin();
        defer later.end(collecting);
        // Spawns from outside are refused from here on (`lifecycle_pending`): they would only
        // compete for the lock below. Monotonic: a count, read as a hint; the decrement runs
        // after the unlock (defers run in reverse), the run stopped by then, and perhaps after
        // a restart (the count is kept by it, so that this decrement cannot wrap it).
        _ = s.lifecycle_pending.fetchAdd(1, .monotonic);
        defer assert(s.lifecycle_pending.fetchSub(1, .monotonic) > 0);
        defer if (@import("builtin").is_test) if (test_hooks.before_uncount) |f| f();
        if (deadline) |d| {
            // Bounded too: another shutdown may hold it for good (joining a worker that never
            // yields). Past the deadline only while a shutdown holds it (`lifecycle_shutdown`):
            // a spawn from outside holds it briefly and is waited for. Before, any holder timed
            // the call out, and a spawn holding it as the deadline passed made it return
            // error.Timeout with the run still going (nothing stopped, nothing to join).
            // After a few yields the wait sleeps: until the deadline if a shutdown holds it
            // (its unlock wakes it for sure), in timed sleeps of a bounded backoff (50 us
            // doubling to 1 ms) if a spawn does (its unlock may miss the wake, see
            // `unlockLifecycleSpawn`). Before, it yielded in a loop, a core kept busy for the
            // whole bound, and for as long as a spawn's thread held the lock (preempted,
            // starved, stopped in a debugger).
            var rounds: u32 = 0;
            var backoff: u64 = lifecycle_backoff_min_ns;
            while (true) {
                // Acquire (seq_cst for the Dekker pair in `bumpLifecycle`): pairs with the
                // bump after an unlock; read before the try, so that an unlock after the try
                // makes the futex wait return at once. Reading a shutdown's bump (or a later
                // one, its release sequence) also orders its `lifecycle_shutdown` store of
                // false before the hint's load below: a hint read true means that shutdown
                // still held the lock after this load, so its unlock's bump comes after.
                const seq = s.lifecycle_events.load(.seq_cst);
                if (s.lifecycle.tryLock()) break;
                // Monotonic: a hint (see `lifecycle_shutdown`); the lock orders the rest.
                const held_by_shutdown = s.lifecycle_shutdown.load(.monotonic);
                const now = monotonicNs();
                if (held_by_shutdown and now >= d) return error.Timeout;
                if (@import("builtin").is_test) if (test_hooks.lock_wait) |f| f(d);
                rounds +|= 1;
                // A spawn holds it briefly, and a shutdown may be about to say so: a few
                // yields first.
                if (rounds <= 8) {
                    std.Thread.yield() catch {};
                    continue;
                }
                // Seq_cst: the other half of `bumpLifecycle`'s Dekker pair, counted before the
                // futex compare; the decrement is a count only. A spawn's unlock reads the
                // count with a monotonic load only (`unlockLifecycleSpawn`) and may miss it.
                _ = s.lifecycle_waiters.fetchAdd(1, .seq_cst);
                defer _ = s.lifecycle_waiters.fetchSub(1, .monotonic);
                // A shutdown holds it (the hint): its unlock, or its end of a stage, bumps for
                // sure, so the wait is until the deadline (then the look above gives up).
                // Otherwise a spawn holds it (or a shutdown that has not said so yet: its
                // saying so bumps for sure): the spawn's unlock may miss the wake, so the wait
                // is a bounded backoff, at most until the deadline while before it. Before,
                // past the deadline it waited for an unlock with no bound, and every spawn
                // from outside paid a seq_cst read-modify-write to make that wake certain.
                // (A shutdown holding it past the deadline returned above: `now < d` there.)
                const wait_ns: u64 = if (held_by_shutdown) d - now else if (now < d) @min(backoff, d - now) else backoff;
                if (!held_by_shutdown) backoff = @min(backoff * 2, lifecycle_backoff_max_ns);
                Futex.timedWait(&s.lifecycle_events, seq, wait_ns) catch {};
            }
        } else s.lifecycle.lock();
        defer s.unlockLifecycle();
        if (@import("builtin").is_test) if (test_hooks.lifecycle_locked) |f| f();
        // Monotonic: a hint for the bounded lock wait above, stored and cleared under the lock.
        s.lifecycle_shutdown.store(true, .monotonic);
        // A waiter past its deadline that read the hint false before this store sleeps until
        // a bump (it took us for a spawn): this one makes it look again, and give up.
        s.bumpLifecycle();
        defer s.lifecycle_shutdown.store(false, .monotonic); // before the unlock (defers run in reverse)
        if (!s.join_pending.load(.monotonic)) {
            // A stage left (`join_stage`) keeps `join_pending` until the join is done.
            assert(s.join_stage == .none);
            if (s.state.load(.acquire) != .running) return;
            // A finish's drain stops short of the deadline, leaving the join a share of what
            // is left (`joinReserve`): a drain that never ran dry used all of it, and the join
            // of workers that were only idle then timed out at once (error.Timeout, the join
            // left pending, everything left allocated), as if a coroutine never yielded.
            const drain_by: ?u64 = if (deadline) |d| d - joinReserve(d) else null;
            if (@import("builtin").is_test) if (test_hooks.drain_by) |f| f(drain_by);
            s.stopRun(mode, drain_by);
            s.join_pending.store(true, .monotonic);
        }
        // Joined already if a bounded one left the rest (its workers are gone).
        if (deadline) |d| if (s.join_stage == .none) s.awaitWorkersExited(d) catch |err| {
            // Threads waiting for this run's scopes would wait for the join (the children are
            // abandoned there), which may never come: they end their waits now.
            s.unjoined.store(true, .monotonic); // see `unjoined`
            s.wakeOutsideWaits();
            return err;
        };
        // error.Timeout: joined, the rest left to the next shutdown (`join_stage`),
        // `join_pending` kept (a restart stays refused).
        s.joinAndFree(deadline) catch |err| {
            // Left before the coroutines were abandoned (a wake or drain from outside still
            // inside), or while their cleanups still run (`.abandoning`: one waits for a lock
            // another thread holds, perhaps for good): threads waiting for this run's scopes end
            // their waits, as above. Past that, the abandon woke them.
            if (s.join_stage == .joined or s.join_stage == .abandoning) {
                s.unjoined.store(true, .monotonic); // see `unjoined`
                s.wakeOutsideWaits();
            }
            return err;
        };
        s.join_pending.store(false, .monotonic);
        // Cleared only now: a thread that comes to wait while this (unbounded) join waits for
        // the coroutine that never yields does not wait for it either.
        s.unjoined.store(false, .monotonic);
    }

    /// The share of the time left until `deadline` that a finish's drain leaves to the join
    /// (`shutdownBy`): a quarter, at most 100 ms, long enough for workers that are not stuck in
    /// a coroutine to see the stop and leave (a wake and a coroutine's last slice).
    fn joinReserve(deadline: u64) u64 {
        return @min((deadline -| monotonicNs()) / 4, 100 * std.time.ns_per_ms);
    }

    /// A thread outside the run waiting on `word` (a futex word it waits on, bumped by
    /// `wakeOutsideWaits`): listed from `listOutsideWait` to `unlistOutsideWait`, on the
    /// waiter's stack (no allocation per wait).
    pub const OutsideWait = struct {
        word: *std.atomic.Value(u32),
        prev: ?*OutsideWait = null,
        next: ?*OutsideWait = null,
    };

    /// Lists `w` (see `outside_waits`); then its waiter looks at `joinLeft` before each wait.
    pub fn listOutsideWait(s: *Scheduler, w: *OutsideWait) void {
        s.outside_mutex.lock();
        defer s.outside_mutex.unlock();
        w.prev = null;
        w.next = s.outside_waits;
        if (s.outside_waits) |h| h.prev = w;
        s.outside_waits = w;
    }

    /// Takes `w` off the list, before its waiter returns (its node and word may go then).
    pub fn unlistOutsideWait(s: *Scheduler, w: *OutsideWait) void {
        s.outside_mutex.lock();
        defer s.outside_mutex.unlock();
        if (w.prev) |p| p.next = w.next else {
            assert(s.outside_waits == w);
            s.outside_waits = w.next;
        }
        if (w.next) |n| n.prev = w.prev;
        w.* = .{ .word = w.word };
    }

    /// True once a bounded shutdown left the join of this run pending (`unjoined`): a thread
    /// listed in `outside_waits` ends its wait (error.Shutdown).
    pub fn joinLeft(s: *const Scheduler) bool {
        return s.unjoined.load(.monotonic); // see `unjoined`
    }

    /// Wakes every listed outside waiter: bumps its word, so that a futex wait on the value it
    /// read before it looked at `joinLeft` returns. Under `outside_mutex`: a waiter unlists
    /// itself under it before its word can go.
    fn wakeOutsideWaits(s: *Scheduler) void {
        s.outside_mutex.lock();
        defer s.outside_mutex.unlock();
        var it = s.outside_waits;
        while (it) |w| : (it = w.next) {
            // Release: pairs with the waiter's acquire load of its word, so that a waiter that
            // reads the bumped value sees `unjoined` (stored before this) too.
            _ = w.word.fetchAdd(1, .release);
            std.Thread.Futex.wake(w.word, std.math.maxInt(u32));
        }
    }

    /// `shutdownBy`'s first half, under `lifecycle`: a finish's drain (until `deadline`,
    /// null: none), `end_hook`, and the store of `stopping` that tells the workers to leave.
    fn stopRun(s: *Scheduler, mode: ShutdownMode, deadline: ?u64) void {
        // How it ends: a finish only once its drain ran dry.
        var ended: ShutdownMode = .cancel;
        if (mode == .finish) {
            // Outside spawns are refused (`lifecycle_pending`); coroutines may still spawn
            // while we drain. In slices, so that a cancel asked for meanwhile
            // (`cancelPending`) ends the wait: the rest is then abandoned, as a cancel would
            // (so it is past a deadline).
            while (!s.cancel_pending.load(.acquire)) {
                var slice: u64 = 10 * std.time.ns_per_ms;
                if (deadline) |d| {
                    const now = monotonicNs();
                    if (now >= d) break;
                    slice = @min(slice, d - now);
                }
                s.drainFor(slice) catch |err| switch (err) {
                    error.Timeout => continue,
                    else => break,
                };
                ended = .finish;
                break;
            }
        }
        if (s.end_hook) |hook| hook(ended);
        // Seq_cst: the store half of the Dekker pair with `wakeOutside` (its count in `wakers`,
        // then its load of `state`); also a release that pairs with the acquire loads of
        // `isRunning` and `drainUntil`, so that who finds it stopping finds what `end_hook`
        // recorded too.
        s.state.store(.stopping, .seq_cst);
        s.wakeAll();
        s.wakeWatchdog();
        // A drain on another thread asleep on `drain_seq` (`drainUntil`) returns error.Shutdown
        // now: its bump (release, after the store above) makes the drain's seq_cst load of the
        // word see `stopping` too, and a drain that read the word before it finds it changed
        // at its futex wait. Before, only the join pinged it (`joinAndFree`, after the
        // workers): a bounded shutdown that gave up earlier (a worker that never yields, a wake
        // from outside still inside) left the drain asleep until the next shutdown or its own
        // bound, the run stopped.
        s.pingDrain();
        // Threads waiting on this run's scopes that end their waits as it stops
        // (`Scope.ThreadWait.stop`: the C ABI's kc_scope_wait): its bump (release, after the
        // store above) makes their acquire load of the word see `stopping` too.
        s.wakeOutsideWaits();
    }

    /// Waits until every worker of the run left its loop (`exited`), or error.Timeout at
    /// `deadline` (`monotonicNs`).
    fn awaitWorkersExited(s: *Scheduler, deadline: u64) error{Timeout}!void {
        if (@import("builtin").is_test) if (test_hooks.join_by) |f| f(deadline);
        const n: u32 = @intCast(s.workers.len);
        while (true) {
            // Acquire: pairs with each worker's release increment as it leaves.
            const seen = s.exited.load(.acquire);
            assert(seen <= n);
            if (seen == n) return;
            const now = monotonicNs();
            if (now >= deadline) return error.Timeout;
            // A count moved since `seen` returns at once; a spurious wake loops.
            std.Thread.Futex.timedWait(&s.exited, seen, deadline - now) catch {};
        }
    }

    /// `shutdownBy`'s second half, under `lifecycle`, once the run is stopped: joins the
    /// workers and frees everything; error.Timeout if a wake or a drain from outside is still
    /// inside at `deadline` (null: none), the workers joined and nothing freed, or if the
    /// `unmap_hook` waited past it, everything freed but the stacks (`join_stage`: the next call
    /// goes on from there).
    fn joinAndFree(s: *Scheduler, deadline: ?u64) error{Timeout}!void {
        if (s.join_stage == .none) {
            for (s.workers) |*w| w.thread.?.join();
            // After the workers: it reads their deadlines and heaps.
            s.watchdog.?.join();
            s.watchdog = null;
            s.join_stage = .joined;
        }
        if (s.join_stage == .joined) {
            // Wakes from outside that saw the run going on may still read a coroutine (and push
            // it to the inject queue, where it is abandoned with the rest): let them finish.
            // Later ones see `stopping` and leave (`awaitNone`'s seq_cst loads: the other half of
            // the Dekker pair of `stopRun`'s store). Bounded by the deadline: before, a bounded
            // shutdown waited here for as long as such a thread stayed inside (starved, in a
            // debugger), past its bound.
            if (!s.awaitNone(&s.wakers, deadline)) return error.Timeout;
            // A `drain` on another thread reads the workers' counters: let it see `stopping`
            // and leave before they are freed.
            s.pingDrain();
            if (!s.awaitNone(&s.drainers, deadline)) return error.Timeout;
            // Readers of the statistics (`workerStats`, `liveCount`, ...) read them too. Those
            // that find no workers from here on read the live count summed now (the workers
            // joined, no spawn from outside while we hold `lifecycle`: it holds still) until
            // `abandonAll` moved it to `live`. Monotonic: `dropWorkers`' seq_cst store of
            // `workers_live` publishes it (see `liveCount`).
            s.live_folded.store(s.liveIn(s.workers), .monotonic);
            const busy = s.collectBusy(s.workers);
            s.busy_folded.store(busy.in -| busy.out, .monotonic);
            if (!s.dropWorkers(deadline)) return error.Timeout;
            s.abandonAll();
            s.join_stage = .abandoning;
        }
        if (s.join_stage == .abandoning) {
            if (!s.releaseAllAbandoned(deadline)) return error.Timeout;
            // Every one that never finished was counted out there: none is live.
            assert(s.live.load(.monotonic) == 0);
            s.join_stage = .freed;
        }
        if (s.unmap_hook) |hook| if (!hook(deadline)) return error.Timeout;
        s.join_stage = .none;
        s.pool.deinitAbandoning();
        s.state.store(.stopped, .release);
    }

    /// `joinAndFree`'s middle part, the workers joined and no thread inside the run: frees
    /// everything but the stacks, and counts the coroutines that never finished, which
    /// `releaseAllAbandoned` then abandons (their handles freed by `finish_hook`).
    fn abandonAll(s: *Scheduler) void {
        // No thread runs a coroutine any more: free everything, finished or not. The workers'
        // shares of `liveCount` first go to `live`, which then counts every coroutine that never
        // finished, each counted out as it is abandoned below (`releaseAbandoned`). Before, the
        // count read `live` alone from here on, outside spawns ever made, finished or not, and a
        // thread that its abandoned scope child woke (`abandonChild`) read them live.
        // Monotonic: the workers were joined, which ordered their counts before these loads.
        s.live.store(s.liveIn(s.workers), .monotonic);
        // Release: pairs with `liveCount`'s acquire load: a reader that finds no sum reads
        // `live` holding it (or less, as abandoned ones are counted out below).
        assert(s.live_folded.load(.monotonic) == s.live.load(.monotonic));
        s.live_folded.store(no_fold, .release);
        // None busy from here on (monotonic: the release store below publishes both).
        s.ext_in.store(0, .monotonic);
        s.ext_out.store(0, .monotonic);
        s.busy_folded.store(no_fold, .release);
        s.abandoned_at_join = s.live.load(.monotonic);
        for (s.workers) |*w| w.timers.deinit();
        s.allocator.free(s.workers);
        s.workers = &.{};
    }

    /// Abandons the coroutines that never finished: they still hold their contexts, found on
    /// the stacks (`releaseAbandoned`). Their cleanups take locks with no bound (a channel's, to
    /// unlink a waiter), and a thread may hold one for good (an undelivered hook that never
    /// returns, on its caller's stack, holds its channel's), so a bounded shutdown (`deadline`)
    /// runs them on a thread of their own (`abandoner`) and waits for it until the deadline
    /// only (at least `abandon_slack_ns` from its start; none unfinished: no thread, nothing
    /// to run): false if it passed first, the thread running on (it ends once that lock is let
    /// go), the stacks left mapped (a waiter on one is still queued on its channel) until the
    /// next shutdown, which waits for it (`join_stage` `.abandoning`). Before, such a shutdown
    /// waited there for as long as that hook ran, past its bound, under `lifecycle` (and the C
    /// ABI's lock). What the cleanups leave for later goes to this thread's collector, as when
    /// it ran them itself. With no bound, or no thread to be had: on this thread, as before.
    fn releaseAllAbandoned(s: *Scheduler, deadline: ?u64) bool {
        var until = deadline;
        if (s.abandoner == null) {
            // None unfinished (`abandonAll` counted them in `live`): no cleanup to run, the
            // walk finds none. Monotonic: our own store.
            if (deadline == null or s.live.load(.monotonic) == 0) {
                s.pool.forEachStack(s, releaseAbandoned);
                return true;
            }
            s.abandon_done.store(0, .monotonic); // no thread reads it yet: the spawn publishes it
            s.abandon_later = .{};
            s.abandoner = std.Thread.spawn(.{}, abandonMain, .{s}) catch {
                s.pool.forEachStack(s, releaseAbandoned);
                return true;
            };
            // A start's slack: a shutdown that comes here at (or past) its deadline, its
            // earlier waits having used it, does not give up on cleanups that take
            // microseconds (before, they always ran to their end here).
            until = @max(deadline.?, monotonicNs() +| abandon_slack_ns);
        }
        while (true) {
            // Acquire: pairs with `abandonMain`'s release store.
            if (s.abandon_done.load(.acquire) != 0) break;
            if (until) |d| {
                const now = monotonicNs();
                if (now >= d) return false;
                Futex.timedWait(&s.abandon_done, 0, d - now) catch {};
            } else Futex.wait(&s.abandon_done, 0);
        }
        s.abandoner.?.join();
        s.abandoner = null;
        // Read `next` before `later` relinks it (it queues to this thread's collector, or runs
        // it now where none collects).
        var it = s.abandon_later.head;
        s.abandon_later = .{};
        while (it) |x| {
            it = x.next;
            coroutine.later(x);
        }
        return true;
    }

    /// How long past its deadline a bounded shutdown that started `abandoner` waits for it at
    /// most (`releaseAllAbandoned`).
    const abandon_slack_ns = 10 * std.time.ns_per_ms;

    /// `abandoner`'s thread: the cleanups, what they leave for later collected in
    /// `abandon_later`.
    fn abandonMain(s: *Scheduler) void {
        const began = s.abandon_later.begin();
        assert(began); // a fresh thread collects nothing yet
        s.pool.forEachStack(s, releaseAbandoned);
        _ = coroutine.collectLater(null); // kept for the joiner: not `end`, which would run it
        // Release: pairs with `releaseAllAbandoned`'s acquire load.
        s.abandon_done.store(1, .release);
        Futex.wake(&s.abandon_done, 1);
    }

    fn releaseAbandoned(s: *Scheduler, st: Stack) void {
        if (!Coroutine.isUnfinishedAt(st)) return;
        const co = Coroutine.at(st);
        // Out of `liveCount` before its cleanups tell anyone it ended (a scope's child: its
        // scope's `live` drops, `abandonChild`, and a thread waiting for the scope returns), as
        // a child that finishes is (`countFinishedNow`). One counted out so cannot be unfinished
        // (it never parks after that, and its worker ran it to its end before it was joined).
        // Monotonic: the cleanup's seq_cst decrement of the scope's `live` publishes it (the
        // waiter reads that with acquire before it reads the count).
        assert(!co.finish_counted);
        _ = s.live.fetchSub(1, .monotonic);
        // First what its waits registered elsewhere (waiters, token links, references), while
        // the handle and context it may name are still there.
        co.runCleanups();
        if (s.finish_hook) |hook| hook(co);
        co.setContext(ctx_mod.empty);
    }

    /// True from `start` until a shutdown begins (acquire: whoever reads false sees what the
    /// shutdown's `end_hook` did).
    pub fn isRunning(s: *const Scheduler) bool {
        return s.state.load(.acquire) == .running;
    }
};

/// The scheduler running the calling coroutine, if any.
pub fn currentScheduler() ?*Scheduler {
    const w = thisWorker() orelse return null;
    return w.sched;
}

// ---------------------------------------------------------------------------------------------
// Tests. Every wait is bounded (`drainFor`); a lost wake-up fails as a timeout, not a hang.

const testing = std.testing;
/// Coroutine stacks of the tests that run a scheduler: the default size. Debug builds' frames
/// are large (a select's is ~3.5 KiB on ARM64), and 32 KiB left one test a few hundred bytes.
const test_stack_size = 64 * 1024;
const test_timeout = 60 * std.time.ns_per_s;

test "the inject queue's count never runs below its list: pops racing pushes on several threads" {
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.stress_ns);
    defer wd.stop();
    // Before, a push counted its coroutine in after it let go of the lock: two pops that both
    // saw one entry counted could take that one and the uncounted one, counting out two,
    // wrapping the count below 0 until the push caught up (a spurious "work" to idle workers;
    // `pop` asserts it now, which failed 2 runs in 4 here without the fix). Bounded: a fixed
    // number of pushes, and a deadline for the pops.
    const per_thread = 50_000;
    const S = struct {
        var q: Inject = .{};
        var cos: [2][per_thread]Coroutine = undefined; // only `link` is used
        var popped = std.atomic.Value(u32).init(0);
        var deadline: u64 = 0;
        fn pusher(k: usize) void {
            for (&cos[k]) |*co| q.push(co);
        }
        fn popper() void {
            while (popped.load(.monotonic) < 2 * per_thread and monotonicNs() < deadline) {
                if (q.pop() != null) _ = popped.fetchAdd(1, .monotonic) else std.atomic.spinLoopHint();
            }
        }
    };
    S.q = .{};
    S.popped.store(0, .monotonic);
    S.deadline = monotonicNs() + 60 * std.time.ns_per_s;
    var threads: [5]std.Thread = undefined;
    threads[0] = try std.Thread.spawn(.{}, S.popper, .{});
    threads[1] = try std.Thread.spawn(.{}, S.popper, .{});
    threads[2] = try std.Thread.spawn(.{}, S.pusher, .{0});
    threads[3] = try std.Thread.spawn(.{}, S.pusher, .{1});
    threads[4] = try std.Thread.spawn(.{}, S.popper, .{});
    for (threads) |t| t.join();
    try testing.expectEqual(@as(u32, 2 * per_thread), S.popped.load(.monotonic));
    try testing.expectEqual(@as(u32, 0), S.q.len.load(.monotonic));
    try testing.expect(S.q.head == null);
}

fn startForTest(s: *Scheduler, workers: u32) !void {
    try s.start(testing.allocator, .{ .workers = workers, .stack_size = test_stack_size });
}

test "every spawned coroutine runs exactly once (2 and 4 workers)" {
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.stress_ns);
    defer wd.stop();
    const n = 20_000;
    const S = struct {
        var ran: [n]std.atomic.Value(u8) = @splat(.init(0));
        fn entry(arg: ?*anyopaque) callconv(.c) void {
            _ = ran[@intFromPtr(arg)].fetchAdd(1, .monotonic);
        }
    };
    for ([_]u32{ 2, 4 }) |workers| {
        for (&S.ran) |*r| r.store(0, .monotonic);
        var s: Scheduler = undefined;
        try startForTest(&s, workers);
        defer s.shutdown(.cancel);
        for (0..n) |i| _ = try s.spawn(S.entry, @ptrFromInt(i));
        try s.drainFor(test_timeout);
        for (&S.ran) |*r| try testing.expectEqual(@as(u8, 1), r.load(.monotonic));
        try testing.expectEqual(@as(u64, 0), s.liveCount());
    }
}

test "park/unpark ping-pong pairs lose no wake-up (1,000,000 operations)" {
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.stress_ns);
    defer wd.stop();
    const pairs = 100;
    const rounds = 2_500; // pairs * rounds * 2 (park + unpark) * 2 sides = 1,000,000
    const Pair = struct {
        turn: std.atomic.Value(u8) = .init(0),
        refs: [2]Ref = undefined,
        ready: std.atomic.Value(u8) = .init(0),
        done: std.atomic.Value(u32) = .init(0),
    };
    const S = struct {
        var sched: *Scheduler = undefined;
        var ps: [pairs]Pair = undefined;
        var finished: std.atomic.Value(u32) = .init(0);
        fn side(arg: ?*anyopaque) callconv(.c) void {
            const id = @intFromPtr(arg);
            const p = &ps[id / 2];
            const me: u8 = @intCast(id % 2);
            const other = 1 - me;
            // Wait until both refs are published (spawned from outside, in order).
            while (p.ready.load(.acquire) < 2) coroutine.yield() catch unreachable;
            for (0..rounds) |_| {
                while (p.turn.load(.acquire) != me) coroutine.park() catch unreachable;
                p.turn.store(other, .release);
                _ = sched.unpark(p.refs[other]);
            }
            _ = finished.fetchAdd(1, .monotonic);
        }
    };
    for ([_]u32{ 2, 4 }) |workers| {
        var s: Scheduler = undefined;
        try startForTest(&s, workers);
        defer s.shutdown(.cancel);
        S.sched = &s;
        S.finished.store(0, .monotonic);
        for (&S.ps, 0..) |*p, i| {
            p.* = .{};
            for (0..2) |k| {
                p.refs[k] = try s.spawn(S.side, @ptrFromInt(i * 2 + k));
                _ = p.ready.fetchAdd(1, .release);
            }
        }
        try s.drainFor(test_timeout);
        try testing.expectEqual(@as(u32, pairs * 2), S.finished.load(.monotonic));
    }
}

test "coroutines spawned by coroutines (a 10-ary tree) all run and join" {
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    const S = struct {
        var sched: *Scheduler = undefined;
        const Node = struct {
            index: u64,
            depth: u32,
            parent: ?*Node,
            sum: std.atomic.Value(u64) = .init(0),
            pending: std.atomic.Value(u32) = .init(10),
            ref: Ref = undefined,
        };
        fn node(arg: ?*anyopaque) callconv(.c) void {
            const me: *Node = @ptrCast(@alignCast(arg.?));
            me.ref = coroutine.current().?.ref();
            var result: u64 = me.index;
            if (me.depth > 0) {
                var children: [10]Node = undefined;
                for (&children, 0..) |*c, i| {
                    c.* = .{ .index = me.index * 10 + i, .depth = me.depth - 1, .parent = me };
                    _ = sched.spawn(node, c) catch unreachable;
                }
                // Children add into `sum` and the last one unparks us.
                while (me.pending.load(.acquire) > 0) coroutine.park() catch unreachable;
                result = me.sum.load(.monotonic);
            }
            if (me.parent) |p| {
                _ = p.sum.fetchAdd(result, .monotonic);
                if (p.pending.fetchSub(1, .acq_rel) == 1) _ = sched.unpark(p.ref);
            } else {
                me.sum.store(result, .release);
                me.pending.store(0, .release);
            }
        }
    };
    var s: Scheduler = undefined;
    try startForTest(&s, 2);
    defer s.shutdown(.cancel);
    S.sched = &s;
    var root: S.Node = .{ .index = 0, .depth = 4, .parent = null };
    root.pending.store(10, .monotonic);
    _ = try s.spawn(S.node, &root);
    try s.drainFor(test_timeout);
    // Leaves are 0..9999 (indices at depth 0 of a 4-level 10-ary tree rooted at 0).
    try testing.expectEqual(@as(u64, 9999 * 10000 / 2), root.sum.load(.acquire));
}

test "a coroutine yielding in a loop does not starve the others on its worker" {
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    const S = struct {
        var stop: std.atomic.Value(bool) = .init(false);
        var others: std.atomic.Value(u32) = .init(0);
        fn hog(_: ?*anyopaque) callconv(.c) void {
            while (!stop.load(.acquire)) coroutine.yield() catch unreachable;
        }
        fn other(_: ?*anyopaque) callconv(.c) void {
            if (others.fetchAdd(1, .monotonic) + 1 == 100) stop.store(true, .release);
        }
    };
    S.stop.store(false, .monotonic);
    S.others.store(0, .monotonic);
    var s: Scheduler = undefined;
    try startForTest(&s, 1);
    defer s.shutdown(.cancel);
    _ = try s.spawn(S.hog, null);
    for (0..100) |_| _ = try s.spawn(S.other, null);
    try s.drainFor(test_timeout);
    try testing.expectEqual(@as(u32, 100), S.others.load(.monotonic));
}

test "a ping-pong pair in the LIFO slot cannot starve the queue" {
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    const S = struct {
        var sched: *Scheduler = undefined;
        var stop: std.atomic.Value(bool) = .init(false);
        var refs: [2]Ref = undefined;
        var started: std.atomic.Value(u32) = .init(0);
        var bounces: std.atomic.Value(u64) = .init(0);
        fn side(arg: ?*anyopaque) callconv(.c) void {
            const me = @intFromPtr(arg);
            // Publish our own Ref before anyone may use it (the spawner's copy could be late).
            const co = coroutine.current().?;
            refs[me] = co.ref();
            _ = started.fetchAdd(1, .release);
            while (started.load(.acquire) < 2) coroutine.yield() catch unreachable;
            while (!stop.load(.acquire)) {
                _ = bounces.fetchAdd(1, .monotonic);
                _ = sched.unpark(refs[1 - me]); // goes to the LIFO slot: runs next
                coroutine.park() catch unreachable;
            }
            _ = sched.unpark(refs[1 - me]);
        }
        fn stopper(_: ?*anyopaque) callconv(.c) void {
            stop.store(true, .release);
        }
    };
    S.stop.store(false, .monotonic);
    S.started.store(0, .monotonic);
    var s: Scheduler = undefined;
    try startForTest(&s, 1);
    defer s.shutdown(.cancel);
    S.sched = &s;
    _ = try s.spawn(S.side, @ptrFromInt(0));
    _ = try s.spawn(S.side, @ptrFromInt(1));
    // Let the pair get going, then queue the coroutine that stops them.
    const d = test_wait.Deadline.in(test_wait.default_ns, "1,000 ping-pong bounces");
    while (S.bounces.load(.monotonic) < 1000) try d.wait();
    _ = try s.spawn(S.stopper, null);
    try s.drainFor(test_timeout);
    try testing.expect(S.stop.load(.acquire));
}

test "workerStats read on another thread while the workers spawn and run through their LIFO slots: a sane depth, runs never going back" {
    // `workerStats` reads each worker's LIFO slot (`queue_depth`) while its owner writes it.
    // Before, a plain read racing the owner's plain stores: a data race, which only
    // ThreadSanitizer shows (`zig build test -Dtsan=true`: its report fails this test); in
    // other builds the race reads a stale but whole pointer, so nothing here can fail without
    // the fix. Elsewhere it exercises the read against two ping-pong pairs, whose every bounce
    // puts the other side in its worker's slot (`unpark` from a worker: `putLifo`), and a
    // spawner, whose every spawn goes to its worker's slot too (displacing one to the deque).
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.stress_ns);
    defer wd.stop();
    const S = struct {
        var sched: *Scheduler = undefined;
        var stop: std.atomic.Value(bool) = .init(false);
        var refs: [4]Ref = undefined;
        var started: std.atomic.Value(u32) = .init(0);
        var bounces: std.atomic.Value(u64) = .init(0);
        var reads: std.atomic.Value(u64) = .init(0);
        var spawned: std.atomic.Value(u64) = .init(0);
        /// The reader's finding: 0 fine, 1 a depth beyond the deque and the slot, 2 a worker's
        /// `runs` smaller than it read before, 3 no statistics for a live worker.
        var bad: std.atomic.Value(u32) = .init(0);
        var joiner: test_wait.Joiner = .{};
        /// Side `me & 1` of pair `me >> 1`: wakes its partner into this worker's LIFO slot,
        /// then parks until the partner wakes it.
        fn side(arg: ?*anyopaque) callconv(.c) void {
            const me = @intFromPtr(arg);
            const partner = me ^ 1;
            refs[me] = coroutine.current().?.ref();
            // Release: publishes `refs[me]`; pairs with the acquire load below.
            _ = started.fetchAdd(1, .release);
            while (started.load(.acquire) < 4) coroutine.yield() catch unreachable;
            while (!stop.load(.acquire)) {
                _ = bounces.fetchAdd(1, .monotonic);
                _ = sched.unpark(refs[partner]);
                coroutine.park() catch unreachable;
            }
            _ = sched.unpark(refs[partner]);
        }
        fn nop(_: ?*anyopaque) callconv(.c) void {}
        /// Spawns (each into this worker's LIFO slot) and yields, until told to stop.
        fn spawner(_: ?*anyopaque) callconv(.c) void {
            while (!stop.load(.acquire)) {
                _ = sched.spawn(nop, null) catch return;
                _ = spawned.fetchAdd(1, .monotonic);
                coroutine.yield() catch unreachable;
            }
        }
        fn reader() void {
            defer joiner.done();
            var last: [2]u64 = .{ 0, 0 };
            // Acquire: pairs with the test's release store.
            while (!stop.load(.acquire)) {
                for (0..2) |i| {
                    const st = sched.workerStats(i) orelse {
                        bad.store(3, .monotonic);
                        return;
                    };
                    if (st.queue_depth > queue_capacity + 1) bad.store(1, .monotonic);
                    if (st.runs < last[i]) bad.store(2, .monotonic);
                    last[i] = st.runs;
                }
                _ = reads.fetchAdd(1, .monotonic);
            }
        }
    };
    S.stop.store(false, .monotonic);
    S.started.store(0, .monotonic);
    S.bounces.store(0, .monotonic);
    S.reads.store(0, .monotonic);
    S.spawned.store(0, .monotonic);
    S.bad.store(0, .monotonic);
    S.joiner = .{};
    var s: Scheduler = undefined;
    try startForTest(&s, 2);
    defer s.shutdown(.cancel);
    S.sched = &s;
    var thread: ?std.Thread = null;
    defer {
        S.stop.store(true, .release); // pairs with the reader's and the sides' acquire loads
        if (thread) |t| S.joiner.join(t, test_wait.default_ns, "the statistics reader");
    }
    for (0..4) |i| _ = try s.spawn(S.side, @ptrFromInt(i));
    _ = try s.spawn(S.spawner, null);
    thread = try std.Thread.spawn(.{}, S.reader, .{});
    // All going on at once, bounded in time.
    const d = test_wait.Deadline.in(test_wait.default_ns, "20,000 bounces, 2,000 spawns and 2,000 statistics reads");
    while (S.bounces.load(.monotonic) < 20_000 or S.spawned.load(.monotonic) < 2_000 or
        S.reads.load(.monotonic) < 2_000) try d.wait();
    S.stop.store(true, .release);
    S.joiner.join(thread.?, test_wait.default_ns, "the statistics reader");
    thread = null;
    try s.drainFor(test_timeout);
    try testing.expectEqual(@as(u32, 0), S.bad.load(.monotonic));
}

test "timers fire in deadline order and never early" {
    const n = 40;
    const S = struct {
        var sched: *Scheduler = undefined;
        var order: [n]u32 = undefined;
        var next: std.atomic.Value(u32) = .init(0);
        var early: std.atomic.Value(u32) = .init(0);
        var delays: [n]u64 = undefined;
        var deadlines: [n]u64 = undefined;
        fn sleeper(arg: ?*anyopaque) callconv(.c) void {
            const i: u32 = @intCast(@intFromPtr(arg));
            // One clock read for both the timer and the order check: with `sleep`, which reads
            // the clock again, a preemption between the two reads (a loaded machine, qemu) could
            // put two timers 1 ms apart in the other order than the recorded deadlines.
            deadlines[i] = monotonicNs() + delays[i];
            while (!(sched.parkUntil(deadlines[i]) catch unreachable)) {}
            if (monotonicNs() < deadlines[i]) _ = early.fetchAdd(1, .monotonic);
            order[next.fetchAdd(1, .monotonic)] = i;
        }
    };
    // Distinct delays 1..40 ms in a seeded shuffle, on one worker so the order is global.
    var prng = std.Random.DefaultPrng.init(0x5eed);
    for (&S.delays, 0..) |*d, i| d.* = (i + 1) * std.time.ns_per_ms;
    prng.random().shuffle(u64, &S.delays);
    S.next.store(0, .monotonic);
    S.early.store(0, .monotonic);
    var s: Scheduler = undefined;
    // The watchdog out of the way (a grace of 10 s): it fires a worker's timers late by more
    // than the grace to the inject queue, which the worker takes after its own list, so with
    // the thread preempted that long (qemu on a loaded machine: it failed once in CI) a timer
    // the worker fired itself could run before earlier ones the watchdog fired. Its own test
    // is below; here the owner fires every timer, in deadline order.
    try s.start(testing.allocator, .{
        .workers = 1,
        .stack_size = test_stack_size,
        .timer_grace_ns = 10 * std.time.ns_per_s,
    });
    defer s.shutdown(.cancel);
    S.sched = &s;
    for (0..n) |i| _ = try s.spawn(S.sleeper, @ptrFromInt(i));
    try s.drainFor(test_timeout);
    try testing.expectEqual(@as(u32, 0), S.early.load(.monotonic));
    // The coroutines start at slightly different times, so compare the deadlines themselves.
    for (1..n) |k| try testing.expect(S.deadlines[S.order[k - 1]] <= S.deadlines[S.order[k]]);
}

test "a worker stuck in one long run does not hold back its timers: the watchdog fires them" {
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    // The sleeper arms its timer on worker W and parks; W then runs the hog, which its LIFO
    // slot holds (no other worker can take it from there) and which spins until the sleeper
    // has woken, or for 5 s. Only the watchdog can fire the timer while W spins: the other
    // worker then resumes the sleeper.
    const S = struct {
        var woke: std.atomic.Value(bool) = .init(false);
        var hog_saw_wake: std.atomic.Value(bool) = .init(false);
        var hog_ran: std.atomic.Value(bool) = .init(false);
        var sched: *Scheduler = undefined;
        fn sleeper(_: ?*anyopaque) callconv(.c) void {
            _ = sched.spawn(hog, null) catch unreachable; // to this worker's LIFO slot
            sched.sleep(10 * std.time.ns_per_ms) catch unreachable;
            woke.store(true, .release);
        }
        fn hog(_: ?*anyopaque) callconv(.c) void {
            hog_ran.store(true, .release);
            const give_up = monotonicNs() + 5 * std.time.ns_per_s;
            while (monotonicNs() < give_up) {
                if (woke.load(.acquire)) {
                    hog_saw_wake.store(true, .release);
                    return;
                }
                std.atomic.spinLoopHint();
            }
        }
    };
    S.woke.store(false, .monotonic);
    S.hog_saw_wake.store(false, .monotonic);
    S.hog_ran.store(false, .monotonic);
    var s: Scheduler = undefined;
    try startForTest(&s, 2);
    defer s.shutdown(.cancel);
    S.sched = &s;
    _ = try s.spawn(S.sleeper, null);
    try s.drainFor(test_timeout);
    try testing.expect(S.hog_ran.load(.acquire));
    try testing.expect(S.woke.load(.acquire));
    try testing.expect(S.hog_saw_wake.load(.acquire));
}

test "timed waits woken early do not pile up in the timer heap; armed timers survive pruning" {
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    try timedWaitsPileUpCase(false);
    // Deadline maxInt ("forever", also what a saturating `now + ns` gives): the heap's earliest
    // entry publishes `never`, and pruning still runs (it was under the deadline check).
    try timedWaitsPileUpCase(true);
}

/// Two coroutines taking turns `rounds` times on one worker: side 0 waits with a deadline its
/// partner always beats (each wait leaves a disarmed timer entry behind), side 1 parks; side 0
/// then runs `after`, if set.
fn TimedPingPong(comptime rounds: usize) type {
    return struct {
        var sched: *Scheduler = undefined;
        var deadline: *const fn () u64 = undefined;
        var after: ?*const fn () void = null;
        var turn: std.atomic.Value(u8) = .init(0);
        var refs: [2]Ref = undefined;
        var ready: std.atomic.Value(u8) = .init(0);

        fn side(arg: ?*anyopaque) callconv(.c) void {
            const me: u8 = @intCast(@intFromPtr(arg));
            while (ready.load(.acquire) < 2) coroutine.yield() catch unreachable;
            for (0..rounds) |_| {
                while (turn.load(.acquire) != me) {
                    if (me == 0) {
                        _ = sched.parkUntil(deadline()) catch unreachable;
                    } else coroutine.park() catch unreachable;
                }
                turn.store(1 - me, .release);
                _ = sched.unpark(refs[1 - me]);
            }
            if (me == 0) if (after) |f| f();
        }

        fn spawn(s: *Scheduler, deadline_fn: *const fn () u64, after_fn: ?*const fn () void) !void {
            sched = s;
            deadline = deadline_fn;
            after = after_fn;
            turn.store(0, .monotonic);
            ready.store(0, .monotonic);
            for (0..2) |k| {
                refs[k] = try s.spawn(side, @ptrFromInt(k));
                _ = ready.fetchAdd(1, .release);
            }
        }
    };
}

fn timedWaitsPileUpCase(forever: bool) !void {
    const P = TimedPingPong(20_000);
    const S = struct {
        var slept: std.atomic.Value(bool) = .init(false);
        fn hour() u64 {
            return monotonicNs() + 3600 * std.time.ns_per_s;
        }
        fn never() u64 {
            return std.math.maxInt(u64);
        }
        // Its scheduler comes as its argument, not through `P.sched`: `P.spawn` below stores
        // that again while this may already run (a data race ThreadSanitizer reported).
        fn sleeper(arg: ?*anyopaque) callconv(.c) void {
            const sched: *Scheduler = @ptrCast(@alignCast(arg.?));
            sched.sleep(20 * std.time.ns_per_ms) catch unreachable;
            slept.store(true, .release);
        }
    };
    S.slept.store(false, .monotonic);
    var s: Scheduler = undefined;
    try startForTest(&s, 1);
    defer s.shutdown(.cancel);
    // Armed throughout the prunes: must still fire. Not beside the "forever" waits: its entry
    // would be the heap's earliest for as long as they run.
    if (!forever) _ = try s.spawn(S.sleeper, &s);
    try P.spawn(&s, if (forever) S.never else S.hour, null);
    try s.drainFor(test_timeout);
    try testing.expect(S.slept.load(.acquire) != forever);
    // Without pruning: one entry per early wake (20,000), each staying for an hour (for good).
    try testing.expect(s.workers[0].timers.count() <= 2 * prune_min + 2);
}

test "drain and drainFor from one of the scheduler's coroutines are InvalidArgument at once" {
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    const S = struct {
        var sched: *Scheduler = undefined;
        var results: [2]?anyerror = .{ null, null };
        fn drainer(_: ?*anyopaque) callconv(.c) void {
            sched.drain() catch |e| {
                results[0] = e;
            };
            // Before, it waited out the whole bound on its worker's thread, then said Timeout.
            sched.drainFor(std.time.ns_per_s) catch |e| {
                results[1] = e;
            };
        }
    };
    S.results = .{ null, null };
    var s: Scheduler = undefined;
    try startForTest(&s, 1);
    defer s.shutdown(.cancel);
    S.sched = &s;
    _ = try s.spawn(S.drainer, null);
    try s.drainFor(test_timeout);
    try testing.expectEqual(@as(?anyerror, error.InvalidArgument), S.results[0]);
    try testing.expectEqual(@as(?anyerror, error.InvalidArgument), S.results[1]);
}

test "entries of timed waits woken early are counted out as they expire, not only by a prune" {
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    // 30 waits with a 2 ms deadline that the partner beats (on a slow machine some time out
    // instead): up to 30 disarmed entries, fewer than a prune looks at. Side 0 then sleeps past
    // them all: they expire and leave the heap, in the pass that fires its timer, or in the
    // worker's next pass if a wake let the sleep end past its deadline without one. Before,
    // the count kept them, and past 64 ever disarmed the worker took its timer lock on every
    // pass to look at pruning.
    const P = TimedPingPong(30);
    const S = struct {
        fn soon() u64 {
            return monotonicNs() + 2 * std.time.ns_per_ms;
        }
        fn sleepPast() void {
            P.sched.sleep(5 * std.time.ns_per_ms) catch unreachable;
        }
    };
    var s: Scheduler = undefined;
    try startForTest(&s, 1);
    defer s.shutdown(.cancel);
    try P.spawn(&s, S.soon, S.sleepPast);
    try s.drainFor(test_timeout);
    // `drain` returns once no coroutine runs and no timer is armed, which may come before the
    // pass that drops the expired entries ends: the watchdog's, having woken the sleeper, or the
    // worker's next one. Without the count out, the count stays up to the deadline.
    const left = settledTimers(&s.workers[0], test_timeout);
    try testing.expectEqual(@as(usize, 0), left.count);
    try testing.expectEqual(@as(u32, 0), left.disarmed);
}

/// A worker's timer heap size and disarm count, read under its lock (a pass firing the heap
/// holds it to its end), as soon as both are 0, or as they are once `timeout_ns` has passed.
fn settledTimers(w: *Worker, timeout_ns: u64) struct { count: usize, disarmed: u32 } {
    const end = monotonicNs() +| timeout_ns;
    while (true) {
        w.timer_lock.lock();
        const count = w.timers.count();
        const disarmed = w.timers_disarmed.load(.monotonic);
        w.timer_lock.unlock();
        if ((count == 0 and disarmed == 0) or monotonicNs() >= end) return .{ .count = count, .disarmed = disarmed };
        std.Thread.yield() catch {};
    }
}

test "a disarm that the watchdog's pass drops the entry of before it is counted is counted out all the same" {
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    // A coroutine woken early (here by a permit of its own) disarms its timer; the watchdog
    // fires the heap before the disarm is counted and drops the entry, counting it out of a
    // count that does not have it yet. Before, the count then stayed one high for good (below
    // `prune_min` nothing prunes it), one more each time it happened.
    const S = struct {
        var sched: *Scheduler = undefined;
        var deadline: u64 = 0;
        var early: ?bool = null;
        fn dropNow() void {
            test_hooks.after_disarm = null; // once
            const w = &sched.workers[0];
            w.timer_lock.lock();
            defer w.timer_lock.unlock();
            // The watchdog's pass, as it runs once the deadline is past.
            w.fireTimers(deadline);
        }
        fn waiter(_: ?*anyopaque) callconv(.c) void {
            _ = coroutine.current().?.unpark(); // a permit: the park returns at once
            deadline = monotonicNs() + 3600 * std.time.ns_per_s;
            test_hooks.after_disarm = dropNow;
            early = !(sched.parkUntil(deadline) catch unreachable);
        }
    };
    S.early = null;
    var s: Scheduler = undefined;
    try startForTest(&s, 1);
    defer s.shutdown(.cancel);
    defer test_hooks.after_disarm = null;
    S.sched = &s;
    _ = try s.spawn(S.waiter, null);
    try s.drainFor(test_timeout);
    try testing.expectEqual(@as(?bool, true), S.early);
    const w = &s.workers[0];
    w.timer_lock.lock();
    defer w.timer_lock.unlock();
    try testing.expectEqual(@as(usize, 0), w.timers.count());
    try testing.expectEqual(@as(u32, 0), w.timers_disarmed.load(.monotonic));
}

test "a disarm between a prune's read of the count and its scan is counted out with its entry" {
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    // The owner prunes with the count it read under its lock; a coroutine woken early on
    // another worker disarms its timer (count in, then CAS: no lock) before the scan, which
    // then drops that entry too. Before, the prune counted out only what it had read: the
    // count kept that disarm with no entry left for it, one high for good below `prune_min`.
    var s: Scheduler = undefined;
    try startForTest(&s, 1);
    defer s.shutdown(.cancel);
    const w = &s.workers[0];
    // A coroutine object only for its timer word: the entry's deadline is never reached, and
    // the prune below drops it.
    var co: Coroutine = undefined;
    const armed: u32 = (7 << 1) | 1;
    co.timer_state = .init(armed);
    w.timer_lock.lock();
    defer w.timer_lock.unlock();
    try w.timers.add(.{ .deadline = never - 1, .co = &co, .gen = 0, .armed_word = armed });
    // The owner's check has read the count (0 here; it took what it read as the prune's
    // `seen`); then the disarm, as `parkUntil` does it when woken early; then the prune.
    try testing.expectEqual(@as(u32, 0), w.timers_disarmed.load(.monotonic));
    _ = w.timers_disarmed.fetchAdd(1, .monotonic);
    try testing.expect(co.timer_state.cmpxchgStrong(armed, armed & ~@as(u32, 1), .acq_rel, .monotonic) == null);
    w.pruneTimers();
    try testing.expectEqual(@as(usize, 0), w.timers.count());
    try testing.expectEqual(@as(u32, 0), w.timers_disarmed.load(.monotonic));
}

test "drain waits for sleeping coroutines; parked ones do not hold it" {
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    const S = struct {
        var sched: *Scheduler = undefined;
        var woke: std.atomic.Value(bool) = .init(false);
        fn sleeper(_: ?*anyopaque) callconv(.c) void {
            sched.sleep(20 * std.time.ns_per_ms) catch unreachable;
            woke.store(true, .release);
        }
        fn forever(_: ?*anyopaque) callconv(.c) void {
            coroutine.park() catch unreachable;
        }
    };
    S.woke.store(false, .monotonic);
    var s: Scheduler = undefined;
    try startForTest(&s, 2);
    defer s.shutdown(.cancel);
    S.sched = &s;
    _ = try s.spawn(S.forever, null);
    _ = try s.spawn(S.sleeper, null);
    try s.drainFor(test_timeout);
    try testing.expect(S.woke.load(.acquire));
    try testing.expectEqual(@as(u64, 1), s.liveCount()); // the parked one
}

test "drain, again and again while work moves between workers, returns only when all of it is done" {
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    // A ring of coroutines passes a token: each waits for its turn, sometimes sleeps (a timer),
    // and wakes the next one (often on the other worker). The first wake comes from this
    // thread (the count's outside share). Each drain must see the whole ring finished.
    const ring = 8;
    const rounds = 300;
    const S = struct {
        var sched: *Scheduler = undefined;
        var token: std.atomic.Value(u32) = .init(ring);
        var refs: [ring]Ref = undefined;
        var completed: std.atomic.Value(u32) = .init(0);
        fn member(arg: ?*anyopaque) callconv(.c) void {
            const i: u32 = @intCast(@intFromPtr(arg));
            while (token.load(.acquire) != i) coroutine.park() catch unreachable;
            if (i % 3 == 1) sched.sleep(1000) catch unreachable;
            if (i + 1 == ring) {
                _ = completed.fetchAdd(1, .release);
                return;
            }
            token.store(i + 1, .release);
            _ = sched.unpark(refs[i + 1]);
        }
    };
    var s: Scheduler = undefined;
    try startForTest(&s, 2);
    defer s.shutdown(.cancel);
    S.sched = &s;
    S.completed.store(0, .monotonic);
    for (0..rounds) |round| {
        S.token.store(ring, .monotonic);
        for (0..ring) |i| S.refs[i] = try s.spawn(S.member, @ptrFromInt(i));
        S.token.store(0, .release);
        _ = s.unpark(S.refs[0]);
        try s.drainFor(test_timeout);
        try testing.expectEqual(@as(u32, @intCast(round + 1)), S.completed.load(.acquire));
        try testing.expectEqual(@as(u64, 0), s.liveCount());
        try testing.expectEqual(@as(u64, 0), s.busyCount());
    }
}

test "shutdown releases a drain waiting on another thread" {
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    const S = struct {
        var sched: *Scheduler = undefined;
        var returned_at = std.atomic.Value(u64).init(0);
        fn sleeper(_: ?*anyopaque) callconv(.c) void {
            sched.sleep(3600 * std.time.ns_per_s) catch {};
        }
        fn drainer(result: *?anyerror) void {
            sched.drainFor(test_timeout) catch |e| {
                result.* = e;
            };
            returned_at.store(monotonicNs(), .release); // release: `result` is read after it
        }
    };
    var s: Scheduler = undefined;
    try startForTest(&s, 2);
    S.sched = &s;
    S.returned_at.store(0, .monotonic);
    _ = try s.spawn(S.sleeper, null); // holds the count up (an armed timer) for an hour
    var result: ?anyerror = null;
    const t = try std.Thread.spawn(.{}, S.drainer, .{&result});
    // Wait (bounded, yielding: pinned to one CPU the drainer runs only when this thread lets
    // it; a spin of 10,000,000 hints could end before it ran) until the drainer is counted in,
    // so that shutdown meets it there.
    const counted_by = monotonicNs() + test_timeout;
    while (s.drainers.load(.acquire) == 0 and monotonicNs() < counted_by) std.Thread.yield() catch {};
    const counted = s.drainers.load(.acquire) > 0;
    const shut_at = monotonicNs();
    s.shutdown(.cancel);
    t.join();
    try testing.expect(counted);
    try testing.expectEqual(@as(?anyerror, error.Shutdown), result);
    // Released by the shutdown, not by its own deadline a minute on: without the shutdown's
    // ping the drain slept out its timed wait and then saw the state (Shutdown as well).
    try testing.expect(S.returned_at.load(.acquire) - shut_at < test_timeout / 2);
}

test "a drain that counts itself in after a shutdown keeps its count across a restart" {
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    // Through the Zig API (the C ABI's kc_sched_start waits for its drains first): a drain that
    // begins after the shutdown's wait for drains, then a restart before it looks at the state.
    // Before, the restart reset `drainers` to 0 under it: its count out then tripped the
    // assertion (a wrap to 2^32 - 1 without assertions, and the next shutdown waited for good),
    // and a drain of the new run was not waited for by its shutdown.
    const S = struct {
        var sched: *Scheduler = undefined;
        var counted = std.atomic.Value(bool).init(false);
        var go = std.atomic.Value(bool).init(false);
        fn pause() void {
            test_hooks.drain_counted = null; // once
            counted.store(true, .release);
            const deadline = monotonicNs() + test_timeout;
            while (!go.load(.acquire) and monotonicNs() < deadline) std.Thread.yield() catch {};
        }
        fn drainer(result: *?anyerror) void {
            sched.drainFor(test_timeout) catch |e| {
                result.* = e;
                return;
            };
            result.* = null;
        }
    };
    var s: Scheduler = undefined;
    try startForTest(&s, 1);
    S.sched = &s;
    s.shutdown(.cancel);
    test_hooks.drain_counted = S.pause;
    defer test_hooks.drain_counted = null;
    var result: ?anyerror = error.Unexpected;
    const t = try std.Thread.spawn(.{}, S.drainer, .{&result});
    var joined = false;
    defer if (!joined) {
        S.go.store(true, .release);
        t.join();
    };
    const deadline = monotonicNs() + test_timeout;
    while (!S.counted.load(.acquire)) {
        try testing.expect(monotonicNs() < deadline);
        std.Thread.yield() catch {};
    }
    try s.restart(testing.allocator, .{ .workers = 1, .stack_size = test_stack_size });
    const held = s.drainers.load(.acquire);
    S.go.store(true, .release);
    t.join();
    joined = true;
    defer s.shutdown(.cancel); // waits for no drain
    try testing.expectEqual(@as(u32, 1), held); // the drain's count, kept
    try testing.expectEqual(@as(?anyerror, null), result); // it drained the new run: idle
    try testing.expectEqual(@as(u32, 0), s.drainers.load(.acquire));
}

/// Whether a test may fork a child that starts threads. qemu-user (build.zig sets
/// KCORO_TEST_QEMU for every foreign-target `zig build test`, scripts/test.sh for its ARM64
/// runs) aborts such a child when the parent had another thread at the fork (a detached ring
/// notifier an earlier test left running, joined since; the counters' clock ticker still is
/// one: detached, it outlives its last use by ~100 ms): the child's first new
/// thread gets a vCPU index that thread still holds in qemu's plugin table
/// ("qemu_plugin_vcpu_init_hook: assertion failed"), and once the abort's output went into the
/// build runner's protocol pipe and hung the whole run. Those tests check code that is the same
/// on every architecture, which the native runs cover; qemu does not model ARM64's weaker memory
/// ordering anyway.
///
/// Nor under ThreadSanitizer (`zig build test -Dtsan=true`): its runtime kills a child that
/// starts a thread when the parent had several at the fork ("starting new threads after
/// multi-threaded fork is not supported"), and its `die_after_fork=0` may deadlock the child
/// instead. The normal runs cover those tests; those whose child only races (no fault or
/// panic expected: `inChild`, and one each in root.zig and chan/channel.zig) run the child's
/// code in the test's own process there instead, so that the sanitizer sees the races they set
/// up (a shutdown against a wake or a lookup from another thread).
pub fn forkedThreadsOk() bool {
    if (@import("builtin").sanitize_thread) return false;
    return std.posix.getenv("KCORO_TEST_QEMU") == null;
}

/// Runs `body` in a child process (it may fault) and expects it to exit with 0. The children
/// start schedulers: skipped under qemu (see `forkedThreadsOk`). Under ThreadSanitizer, in this
/// process (see there): a fault there ends the whole binary, with the sanitizer's report of it,
/// and so does a failure (a status other than 0), as the in-process children of root.zig and
/// chan/channel.zig end it: a body that fails before its own shutdown leaves its scheduler
/// running, whose threads may use what the body's frame held (a `Scheduler` there). Before,
/// the failure was this test's, and the next tests ran beside those threads.
fn inChild(comptime body: fn () u8) !void {
    if (@import("builtin").sanitize_thread) {
        defer test_hooks = .{}; // a child's hooks died with it; these would outlive the test
        const status = body();
        if (status != 0) {
            std.debug.print("kcoro test: the in-process child failed with status {d}\n", .{status});
            std.posix.exit(status);
        }
        return;
    }
    if (!forkedThreadsOk()) return error.SkipZigTest;
    const pid = try std.posix.fork();
    if (pid == 0) std.posix.exit(body());
    const res = try test_wait.waitChild(pid, test_wait.test_ns, "the forked child");
    try testing.expect(std.posix.W.IFEXITED(res.status));
    try testing.expectEqual(@as(u32, 0), std.posix.W.EXITSTATUS(res.status));
}

test "a Ref outliving its run wakes nobody and reads no unmapped stack: after a shutdown, and after a restart at the same address" {
    // A waker from outside (a channel's completer on another thread) takes its `Ref` under a
    // lock and wakes it after it let go: a shutdown may come in between. Before, it read the
    // coroutine's word on the stack the shutdown unmapped (SIGSEGV), or, after a restart that
    // mapped a stack at the same address (generation 1 again), woke a stranger.
    try inChild(struct {
        var woken = std.atomic.Value(u32).init(0);
        fn parker(_: ?*anyopaque) callconv(.c) void {
            coroutine.park() catch unreachable;
            _ = woken.fetchAdd(1, .monotonic);
        }
        fn body() u8 {
            const opts: Options = .{ .workers = 1, .stack_size = test_stack_size };
            var s: Scheduler = undefined;
            s.start(std.heap.page_allocator, opts) catch return 2;
            const stale = s.spawn(parker, null) catch return 2;
            s.drainFor(test_timeout) catch return 2; // parked
            s.shutdown(.cancel); // unmaps its stack
            if (s.unpark(stale)) return 3;
            s.restart(std.heap.page_allocator, opts) catch return 2;
            const fresh = s.spawn(parker, null) catch return 2;
            s.drainFor(test_timeout) catch return 2; // parked
            if (s.unpark(stale)) return 4; // perhaps the same stack address: not its coroutine
            s.drainFor(test_timeout) catch return 2;
            if (woken.load(.monotonic) != 0) return 5;
            if (!s.unpark(fresh)) return 6; // its own Ref still wakes it
            s.drainFor(test_timeout) catch return 2;
            if (woken.load(.monotonic) != 1) return 7;
            s.shutdown(.cancel);
            return 0;
        }
    }.body);
}

test "a wake from outside under way when a shutdown begins is waited for before the stacks go" {
    // The waker is past its checks (counted in `wakers`) when another thread shuts the
    // scheduler down: the shutdown must wait for it before it unmaps the stack it reads.
    try inChild(struct {
        var sched: Scheduler = undefined;
        var waiting = std.atomic.Value(bool).init(false);
        var done = std.atomic.Value(bool).init(false);
        fn parker(_: ?*anyopaque) callconv(.c) void {
            coroutine.park() catch unreachable;
        }
        fn shut() void {
            sched.shutdown(.cancel);
            done.store(true, .release);
        }
        fn pending() void {
            waiting.store(true, .release);
        }
        var shutter: ?std.Thread = null;
        fn inWake() void {
            test_hooks.in_wake = null; // once
            shutter = std.Thread.spawn(.{}, shut, .{}) catch std.posix.exit(2);
            const deadline = monotonicNs() + test_timeout;
            while (!waiting.load(.acquire)) {
                if (monotonicNs() > deadline) std.posix.exit(8);
                std.Thread.yield() catch {};
            }
            if (done.load(.acquire)) std.posix.exit(9); // it did not wait
        }
        fn body() u8 {
            sched.start(std.heap.page_allocator, .{ .workers = 1, .stack_size = test_stack_size }) catch return 2;
            const ref = sched.spawn(parker, null) catch return 2;
            sched.drainFor(test_timeout) catch return 2; // parked
            test_hooks.wakers_pending = pending;
            test_hooks.in_wake = inWake;
            if (!sched.unpark(ref)) return 3; // the run was on when it looked
            shutter.?.join();
            if (!done.load(.acquire)) return 4;
            return 0;
        }
    }.body);
}

/// A forked child's body (`inChild`) for the tests of a shutdown waiting for a call from
/// outside that stays inside: a wake (`unpark` of a parked coroutine, held in `wakers` by
/// `test_hooks.in_wake`), a drain (held in `drainers` by `test_hooks.drain_counted`) or a
/// reader of the statistics (`workerStats`, held in `readers` by `test_hooks.stats_reading`),
/// held there by `T.hold` (once), which starts the shutdown; `T.outcome` says how it went. `T`
/// is `ShutdownGivesUp` or `ShutdownSleep`. Exit codes of its own: 2, a step before the hold
/// failed; 10, the wake found the run over; 11, the drain did not end with error.Shutdown; 12,
/// the reader found no worker.
fn heldOutside(comptime T: type, comptime call: enum { wake, drain, stats }) fn () u8 {
    return struct {
        fn held() void {
            switch (call) {
                .wake => test_hooks.in_wake = null, // once
                .drain => test_hooks.drain_counted = null,
                .stats => test_hooks.stats_reading = null,
            }
            T.hold();
        }
        fn body() u8 {
            T.reset();
            T.sched.start(std.heap.page_allocator, .{ .workers = 1, .stack_size = test_stack_size }) catch return 2;
            const ref = T.sched.spawn(T.parker, null) catch return 2;
            switch (call) {
                .wake => {
                    T.sched.drainFor(test_timeout) catch return 2; // parked
                    test_hooks.in_wake = held;
                    // The run was on when it looked (the shutdown waits for it, the coroutine
                    // still there to wake).
                    if (!T.sched.unpark(ref)) return 10;
                },
                .drain => {
                    test_hooks.drain_counted = held;
                    if (T.sched.drainFor(test_timeout)) |_| return 11 else |err| if (err != error.Shutdown) return 11;
                },
                .stats => {
                    T.sched.drainFor(test_timeout) catch return 2; // parked
                    test_hooks.stats_reading = held;
                    // Read after the hold: the array is still there (not freed under it).
                    if (T.sched.workerStats(0) == null) return 12;
                },
            }
            return T.outcome();
        }
    }.body;
}

/// The set-up the tests of a bounded shutdown that gives up on something from outside (a wake,
/// a drain) still inside share: in a forked child (`inChild`, `heldOutside`), whose hook
/// inside that something calls `hold`, and whose body ends with `outcome`. Statics: `reset`
/// first (under TSan `inChild` runs the body in this process, one test after another).
const ShutdownGivesUp = struct {
    var sched: Scheduler = undefined;
    var result = std.atomic.Value(u32).init(0); // 1: returned, 2: error.Timeout
    var took: u64 = 0;
    var shutter: ?std.Thread = null;
    fn reset() void {
        result.store(0, .monotonic);
        took = 0;
        shutter = null;
    }
    fn parker(_: ?*anyopaque) callconv(.c) void {
        coroutine.park() catch unreachable;
    }
    fn shut() void {
        const t0 = monotonicNs();
        const r: u32 = if (sched.shutdownWithin(.cancel, 200 * std.time.ns_per_ms)) 1 else |_| 2;
        took = monotonicNs() - t0;
        result.store(r, .release); // pairs with the acquire loads below
    }
    /// Starts the bounded shutdown on a thread of its own and holds the caller until it
    /// returned, or a backstop well past its bound.
    fn hold() void {
        shutter = std.Thread.spawn(.{}, shut, .{}) catch std.posix.exit(2);
        const backstop = test_wait.Deadline.in(3 * std.time.ns_per_s, "");
        while (result.load(.acquire) == 0 and !backstop.passed()) std.Thread.yield() catch {};
    }
    /// The child's exit code once the hold ended: 0 if the shutdown gave up at its own
    /// deadline, joined, and the next one finished the join.
    fn outcome() u8 {
        shutter.?.join();
        if (result.load(.acquire) != 2) return 3;
        if (took >= 2 * std.time.ns_per_s) return 4; // the backstop is 3 s
        if (sched.isRunning() or !sched.join_pending.load(.monotonic)) return 5;
        if (!sched.joinLeft()) return 6; // threads waiting on its scopes give up
        sched.shutdown(.cancel); // the rest of the join
        if (sched.join_pending.load(.monotonic) or sched.joinLeft()) return 7;
        if (sched.abandoned_at_join != 1) return 8; // the parked one, woken too late
        return 0;
    }
};

test "a bounded shutdown waiting for a wake from outside still inside gives up at its deadline, joined, and the next one goes on from there" {
    // The waker's thread stays inside (counted in `wakers`: starved, in a debugger) until the
    // shutdown gave up, or a backstop well past its bound. Before, the bounded shutdown waited
    // for it with no bound (`joinAndFree`): the call returned at the backstop, not at its own.
    try inChild(heldOutside(ShutdownGivesUp, .wake));
}

test "a bounded shutdown waiting for a drain on another thread still inside gives up at its deadline, joined, and the next one goes on from there" {
    // The drain's thread stays inside (counted in `drainers`, before it looks at the state)
    // until the shutdown gave up, or a backstop well past its bound. Before, the bounded
    // shutdown waited for it with no bound: the call returned at the backstop.
    try inChild(heldOutside(ShutdownGivesUp, .drain));
}

test "a bounded shutdown waiting for a reader of the statistics on another thread still inside gives up at its deadline, joined, and the next one goes on from there" {
    // The reader's thread stays inside `workerStats` (counted in `readers`, the workers' array
    // in hand) until the shutdown gave up, or a backstop well past its bound. Without the
    // deadline on that wait (`dropWorkers`), the bounded shutdown waited for it with no bound:
    // the call returned at the backstop.
    try inChild(heldOutside(ShutdownGivesUp, .stats));
}

test "a drain on another thread asleep as a bounded shutdown gives up on a worker that never yields ends with error.Shutdown then, not at the next shutdown" {
    // Before, only the join woke a drain asleep on `drain_seq` (`joinAndFree`'s ping, after
    // the workers): a bounded shutdown that gave up before (here, the worker runs a coroutine
    // that never yields) left the drain asleep, the run stopped, until the next shutdown (or
    // the drain's own bound, an hour here). The drain is seen asleep in the kernel first.
    if (@import("builtin").os.tag != .linux) return error.SkipZigTest; // /proc
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    const S = struct {
        var sched: *Scheduler = undefined;
        var tid = std.atomic.Value(std.Thread.Id).init(0);
        var result = std.atomic.Value(u32).init(0); // 1: returned, 2: error.Shutdown, 3: other
        var joiner: test_wait.Joiner = .{};
        fn drainer() void {
            defer joiner.done();
            tid.store(std.Thread.getCurrentId(), .release); // pairs with the test's acquire load
            const r: u32 = if (sched.drainFor(3600 * std.time.ns_per_s)) 1 else |err| if (err == error.Shutdown) 2 else 3;
            result.store(r, .release); // pairs with the test's acquire loads
        }
    };
    S.tid.store(0, .monotonic);
    S.result.store(0, .monotonic);
    S.joiner = .{};
    test_wait.NeverYields.reset();
    var s: Scheduler = undefined;
    try startForTest(&s, 1);
    S.sched = &s;
    _ = try s.spawn(test_wait.NeverYields.body, null);
    try test_wait.NeverYields.awaitRunning();
    const t = try std.Thread.spawn(.{}, S.drainer, .{});
    var done = false;
    defer if (!done) {
        test_wait.NeverYields.letGo();
        s.shutdown(.cancel); // pings the drain, which then returns
        S.joiner.join(t, test_wait.default_ns, "the drain");
    };
    const asleep = test_wait.Deadline.in(test_wait.default_ns, "the drain to sleep");
    while (S.tid.load(.acquire) == 0 or s.drainers.load(.seq_cst) == 0 or test_wait.threadState(S.tid.load(.acquire)) != 'S') try asleep.wait();
    try testing.expectError(error.Timeout, s.shutdownWithin(.cancel, 50 * std.time.ns_per_ms));
    try testing.expect(s.join_pending.load(.monotonic)); // the worker runs on
    const ended = test_wait.Deadline.in(test_wait.default_ns, "the drain to end as the run stopped");
    const gone = while (!ended.passed()) {
        if (S.result.load(.acquire) != 0) break true;
        std.Thread.yield() catch {};
    } else false;
    test_wait.NeverYields.letGo();
    s.shutdown(.cancel);
    S.joiner.join(t, test_wait.default_ns, "the drain");
    done = true;
    try testing.expect(gone);
    try testing.expectEqual(@as(u32, 2), S.result.load(.acquire));
    try testing.expect(!s.join_pending.load(.monotonic));
}

test "a bounded shutdown whose abandoned coroutine's cleanup waits for a lock another thread holds returns by its deadline; the next one frees it all once the lock is let go (leak-checked)" {
    // `join_stage` `.abandoning`: a cleanup that takes a lock (a channel's, to unlink its
    // waiter) held by a thread that does not let go (a stuck undelivered hook's caller). Before,
    // the bounded shutdown ran the cleanups on its own thread and waited for that lock with no
    // bound, past its deadline, holding `lifecycle` (here until the holder's own bound, 30 s,
    // after which it returned with the join done: no error.Timeout). Now the cleanups run on a
    // thread of their own (`abandoner`), which the shutdown waits for until its deadline only;
    // the stacks stay mapped (the waiter is still queued) until the next shutdown.
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    const SpinLock = @import("../chan/lock.zig").SpinLock;
    const S = struct {
        var lock: SpinLock = .{};
        var held = std.atomic.Value(bool).init(false);
        var release = std.atomic.Value(bool).init(false);
        var cleaned = std.atomic.Value(bool).init(false);
        var joiner: test_wait.Joiner = .{};
        fn parker(_: ?*anyopaque) callconv(.c) void {
            var c: coroutine.Cleanup = .{ .run = cleanup };
            coroutine.pushCleanup(&c);
            defer coroutine.popCleanup(&c);
            while (true) coroutine.park() catch return; // abandoned here
        }
        fn cleanup(_: *coroutine.Cleanup) void {
            lock.lock();
            cleaned.store(true, .release); // pairs with the test's acquire loads
            lock.unlock();
        }
        /// Holds the lock until the test lets go, or `default_ns` passed.
        fn holder() void {
            defer joiner.done();
            lock.lock();
            held.store(true, .release); // pairs with the test's acquire load
            const d = test_wait.Deadline.in(test_wait.default_ns, "");
            // Acquire: pairs with the test's release store.
            while (!release.load(.acquire) and !d.passed()) std.Thread.yield() catch {};
            lock.unlock();
        }
    };
    S.lock = .{};
    S.held.store(false, .monotonic);
    S.release.store(false, .monotonic);
    S.cleaned.store(false, .monotonic);
    S.joiner = .{};
    var s: Scheduler = undefined;
    try startForTest(&s, 1);
    _ = try s.spawn(S.parker, null);
    try s.drainFor(test_timeout); // parked
    const t = try std.Thread.spawn(.{}, S.holder, .{});
    var done = false;
    defer if (!done) {
        S.release.store(true, .release);
        S.joiner.join(t, test_wait.default_ns, "the lock's holder");
        s.shutdown(.cancel);
    };
    const holding = test_wait.Deadline.in(test_wait.default_ns, "the lock to be held");
    while (!S.held.load(.acquire)) try holding.wait();
    const bound = 100 * std.time.ns_per_ms;
    const start = monotonicNs();
    try testing.expectError(error.Timeout, s.shutdownWithin(.cancel, bound));
    const took = monotonicNs() - start;
    // By the deadline, plus a slack for a loaded machine (before: until the holder let go).
    try testing.expect(took < bound + 5 * std.time.ns_per_s);
    try testing.expect(s.join_stage == .abandoning);
    try testing.expect(s.join_pending.load(.monotonic));
    try testing.expect(s.joinLeft());
    try testing.expect(!s.isRunning());
    try testing.expect(!S.cleaned.load(.acquire));
    try testing.expectError(error.Shutdown, s.restart(testing.allocator, .{ .workers = 1, .stack_size = test_stack_size }));
    // A second bounded one, the lock still held: gives up at the same stage.
    try testing.expectError(error.Timeout, s.shutdownWithin(.finish, 20 * std.time.ns_per_ms));
    try testing.expect(s.join_stage == .abandoning);
    S.release.store(true, .release); // pairs with `holder`'s acquire load
    S.joiner.join(t, test_wait.default_ns, "the lock's holder");
    done = true;
    s.shutdown(.cancel);
    try testing.expect(S.cleaned.load(.acquire));
    try testing.expect(s.join_stage == .none);
    try testing.expect(s.abandoner == null);
    try testing.expect(!s.join_pending.load(.monotonic));
    try testing.expect(!s.joinLeft());
    try testing.expectEqual(@as(u64, 1), s.abandoned_at_join);
    try testing.expectEqual(@as(u64, 0), s.liveCount());
    try s.restart(testing.allocator, .{ .workers = 1, .stack_size = test_stack_size });
    try expectSpawnRuns(&s);
    s.shutdown(.cancel);
}

test "a bounded shutdown abandons coroutines whose cleanups need no wait on a thread of its own, in time, and frees everything (leak-checked)" {
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    const S = struct {
        var cleaned = std.atomic.Value(u32).init(0);
        fn parker(_: ?*anyopaque) callconv(.c) void {
            var c: coroutine.Cleanup = .{ .run = cleanup };
            coroutine.pushCleanup(&c);
            defer coroutine.popCleanup(&c);
            while (true) coroutine.park() catch return; // abandoned here
        }
        fn cleanup(_: *coroutine.Cleanup) void {
            _ = cleaned.fetchAdd(1, .monotonic); // the join orders it before the test's load
        }
    };
    S.cleaned.store(0, .monotonic);
    var s: Scheduler = undefined;
    try startForTest(&s, 2);
    for (0..8) |_| _ = try s.spawn(S.parker, null);
    try s.drainFor(test_timeout); // parked
    try s.shutdownWithin(.cancel, test_wait.default_ns);
    try testing.expectEqual(@as(u32, 8), S.cleaned.load(.monotonic));
    try testing.expect(s.join_stage == .none);
    try testing.expect(s.abandoner == null);
    try testing.expectEqual(@as(u64, 8), s.abandoned_at_join);
}

test "a bounded shutdown that gives up on a wake from outside, the workers joined, leaves the rest allocated; the next one frees it all and a restart runs (leak-checked)" {
    // `join_stage` `.joined`: the workers joined, nothing freed (the wake still reads the
    // coroutine and the queues). In this process with the leak-checking allocator (the tests
    // of the stage itself run in a child on the page allocator): what the next shutdown frees
    // is all there was, and a restart after it starts afresh.
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    const S = struct {
        var sched: *Scheduler = undefined;
        var ref: Ref = undefined;
        var go = std.atomic.Value(bool).init(false);
        var joiner: test_wait.Joiner = .{};
        fn parker(_: ?*anyopaque) callconv(.c) void {
            coroutine.park() catch return;
        }
        fn nop(_: ?*anyopaque) callconv(.c) void {}
        fn inWake() void {
            test_hooks.in_wake = null; // once
            // Acquire: pairs with the test's release store (a flag only).
            const d = test_wait.Deadline.in(test_wait.default_ns, "");
            while (!go.load(.acquire) and !d.passed()) std.Thread.yield() catch {};
        }
        fn waker() void {
            defer joiner.done();
            _ = sched.unpark(ref);
        }
    };
    S.go.store(false, .monotonic);
    S.joiner = .{};
    var s: Scheduler = undefined;
    try startForTest(&s, 1);
    S.sched = &s;
    S.ref = try s.spawn(S.parker, null);
    try s.drainFor(test_timeout); // parked
    test_hooks.in_wake = S.inWake;
    defer test_hooks.in_wake = null;
    const t = try std.Thread.spawn(.{}, S.waker, .{});
    var done = false;
    defer if (!done) {
        S.go.store(true, .release);
        S.joiner.join(t, test_wait.default_ns, "the waker");
        s.shutdown(.cancel);
    };
    const inside = test_wait.Deadline.in(test_wait.default_ns, "the wake to be inside");
    while (s.wakers.load(.seq_cst) == 0) try inside.wait();
    try testing.expectError(error.Timeout, s.shutdownWithin(.cancel, 50 * std.time.ns_per_ms));
    try testing.expect(s.join_stage == .joined);
    try testing.expect(s.join_pending.load(.monotonic));
    try testing.expect(s.joinLeft());
    try testing.expectEqual(@as(usize, 1), s.workers.len); // not freed
    try testing.expect(!s.isRunning());
    // A second bounded one, the wake still inside: gives up at the same stage.
    try testing.expectError(error.Timeout, s.shutdownWithin(.finish, 20 * std.time.ns_per_ms));
    try testing.expect(s.join_stage == .joined);
    S.go.store(true, .release); // pairs with `inWake`'s acquire load
    S.joiner.join(t, test_wait.default_ns, "the waker");
    done = true;
    s.shutdown(.finish); // either mode: the outcome was decided
    try testing.expect(s.join_stage == .none);
    try testing.expect(!s.join_pending.load(.monotonic));
    try testing.expect(!s.joinLeft());
    try testing.expectEqual(@as(usize, 0), s.workers.len);
    try testing.expectEqual(@as(u64, 1), s.abandoned_at_join); // the parked one, woken too late
    try s.restart(testing.allocator, .{ .workers = 1, .stack_size = test_stack_size });
    _ = try s.spawn(S.nop, null);
    try s.drainFor(test_timeout);
    s.shutdown(.cancel);
    try testing.expectEqual(@as(u64, 0), s.abandoned_at_join);
}

test "a bounded shutdown that gives up on the unmap hook has abandoned the coroutines (their cleanups ran) and freed all but the stacks; the next one unmaps them and a restart runs (leak-checked)" {
    // `join_stage` `.freed`: the host's lookups still read a stack (`unmap_hook` false at the
    // deadline). The coroutines were abandoned (`finish_hook`, cleanups) before it returns.
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    const S = struct {
        var hooked = std.atomic.Value(u32).init(0);
        var finished = std.atomic.Value(u32).init(0);
        fn parker(_: ?*anyopaque) callconv(.c) void {
            coroutine.park() catch return;
        }
        fn nop(_: ?*anyopaque) callconv(.c) void {}
        fn unmap(_: ?u64) bool {
            return hooked.fetchAdd(1, .monotonic) != 0; // the first call gives up
        }
        fn finish(_: *Coroutine) void {
            _ = finished.fetchAdd(1, .monotonic);
        }
    };
    S.hooked.store(0, .monotonic);
    S.finished.store(0, .monotonic);
    var s: Scheduler = undefined;
    try s.start(testing.allocator, .{ .workers = 1, .stack_size = test_stack_size, .unmap_hook = S.unmap, .finish_hook = S.finish });
    _ = try s.spawn(S.parker, null);
    try s.drainFor(test_timeout); // parked
    try testing.expectError(error.Timeout, s.shutdownWithin(.cancel, 50 * std.time.ns_per_ms));
    try testing.expect(s.join_stage == .freed);
    try testing.expect(s.join_pending.load(.monotonic));
    try testing.expectEqual(@as(usize, 0), s.workers.len); // freed
    try testing.expectEqual(@as(u64, 1), s.abandoned_at_join);
    try testing.expectEqual(@as(u32, 1), S.finished.load(.monotonic)); // abandoned already
    s.shutdown(.cancel);
    try testing.expectEqual(@as(u32, 2), S.hooked.load(.monotonic));
    try testing.expectEqual(@as(u32, 1), S.finished.load(.monotonic)); // not again
    try testing.expect(s.join_stage == .none);
    try testing.expect(!s.join_pending.load(.monotonic));
    try s.restart(testing.allocator, .{ .workers = 1, .stack_size = test_stack_size, .unmap_hook = S.unmap, .finish_hook = S.finish });
    _ = try s.spawn(S.nop, null);
    try s.drainFor(test_timeout);
    s.shutdown(.cancel);
    try testing.expectEqual(@as(u32, 3), S.hooked.load(.monotonic));
}

/// The set-up the tests of a shutdown's sleep share, while something from outside (a wake, a
/// drain) holds it: in a forked child (`inChild`, `heldOutside`), whose hook inside that
/// something calls `hold`, and whose body ends with `outcome`. Statics: `reset` first (under
/// TSan `inChild` runs the body in this process, one test after another).
const ShutdownSleep = struct {
    var sched: Scheduler = undefined;
    var done = std.atomic.Value(bool).init(false);
    var looks: u64 = 0;
    var shutter: ?std.Thread = null;
    fn reset() void {
        done.store(false, .monotonic);
        looks = 0;
        shutter = null;
    }
    fn parker(_: ?*anyopaque) callconv(.c) void {
        coroutine.park() catch unreachable;
    }
    fn shut() void {
        sched.shutdown(.cancel);
        done.store(true, .release); // pairs with the acquire loads below
    }
    /// Starts the shutdown on a thread of its own and holds the caller until it sleeps, then a
    /// while more. Exits the child (8: it never slept, 9: it did not wait) otherwise.
    fn hold() void {
        looks = quiesce_looks.load(.monotonic);
        shutter = std.Thread.spawn(.{}, shut, .{}) catch std.posix.exit(2);
        const asleep = test_wait.Deadline.in(test_wait.default_ns, "the shutdown to sleep");
        while (sched.quiesce_waiters.load(.seq_cst) == 0) asleep.wait() catch std.posix.exit(8);
        // A while asleep: it must not go round meanwhile.
        const later = test_wait.Deadline.in(50 * std.time.ns_per_ms, "");
        while (!later.passed()) std.Thread.yield() catch {};
        if (done.load(.acquire)) std.posix.exit(9); // it did not wait
    }
    /// The child's exit code once the hold ended: 0 if the shutdown returned having slept.
    fn outcome() u8 {
        shutter.?.join();
        if (!done.load(.acquire)) return 4;
        // A few yields (8), a sleep, the look that finds none: before, thousands of rounds
        // on an idle machine.
        if (quiesce_looks.load(.monotonic) - looks > 16) return 5;
        if (sched.quiesce_waiters.load(.seq_cst) != 0) return 6;
        return 0;
    }
};

test "a shutdown waiting for a wake from outside in flight sleeps until it ends, not spinning" {
    // The waker is held inside (counted in `wakers`) until the shutdown sleeps. Before, the
    // shutdown yielded in a loop for as long as the waker's thread was preempted or stopped,
    // never counted as a waiter.
    try inChild(heldOutside(ShutdownSleep, .wake));
}

test "a shutdown waiting for a drain on another thread sleeps until it leaves, not spinning" {
    // The drain is held after its count in, before it looks at the state, until the shutdown
    // sleeps. Before, the shutdown yielded in a loop for as long as the drain's thread was
    // preempted or stopped, never counted as a waiter.
    try inChild(heldOutside(ShutdownSleep, .drain));
}

test "a shutdown waiting for a reader of the statistics on another thread sleeps until it leaves, not spinning" {
    // The reader is held inside `workerStats` (counted in `readers`) until the shutdown sleeps:
    // it waits as for a drain (`awaitNone`, woken by the reader's count out), not in a loop.
    try inChild(heldOutside(ShutdownSleep, .stats));
}

test "context: inherited at spawn, shadowed by a child, freed with abandoned coroutines" {
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    const S = struct {
        var sched: *Scheduler = undefined;
        var key: ctx_mod.Key = 0;
        var seen_child: ?usize = null;
        var seen_grandchild: ?usize = null;
        var seen_sibling: ?usize = null;
        fn parent(_: ?*anyopaque) callconv(.c) void {
            _ = sched.spawn(child, null) catch unreachable; // inherits key = 1
            _ = sched.spawn(sibling, null) catch unreachable;
            coroutine.park() catch unreachable; // parked forever: abandoned at shutdown
        }
        fn child(_: ?*anyopaque) callconv(.c) void {
            const me = coroutine.current().?;
            seen_child = me.context.get(key);
            me.setContext(me.context.with(testing.allocator, key, 2) catch unreachable);
            _ = sched.spawn(grandchild, null) catch unreachable; // inherits key = 2
        }
        fn grandchild(_: ?*anyopaque) callconv(.c) void {
            seen_grandchild = coroutine.current().?.context.get(key);
        }
        fn sibling(_: ?*anyopaque) callconv(.c) void {
            seen_sibling = coroutine.current().?.context.get(key); // the child's change is its own
        }
    };
    S.key = ctx_mod.newKey();
    var s: Scheduler = undefined;
    try startForTest(&s, 2);
    defer s.shutdown(.cancel); // frees the parked parent's context (testing.allocator checks)
    S.sched = &s;
    const ctx = try ctx_mod.empty.with(testing.allocator, S.key, 1);
    _ = try s.spawnWith(S.parent, null, ctx, .{});
    ctx.release(); // the parent holds its own reference
    try s.drainFor(test_timeout);
    try testing.expectEqual(@as(?usize, 1), S.seen_child);
    try testing.expectEqual(@as(?usize, 2), S.seen_grandchild);
    try testing.expectEqual(@as(?usize, 1), S.seen_sibling);
}

test "shutdown with work pending frees everything, in both modes" {
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    const S = struct {
        var sched: *Scheduler = undefined;
        var finished: std.atomic.Value(u32) = .init(0);
        fn forever(_: ?*anyopaque) callconv(.c) void {
            coroutine.park() catch unreachable;
        }
        fn spinner(_: ?*anyopaque) callconv(.c) void {
            while (true) coroutine.yield() catch unreachable;
        }
        fn napper(_: ?*anyopaque) callconv(.c) void {
            sched.sleep(5 * std.time.ns_per_ms) catch unreachable;
            _ = finished.fetchAdd(1, .monotonic);
        }
    };
    // Cancel: parked-forever and yielding-forever coroutines are abandoned and freed.
    {
        var s: Scheduler = undefined;
        try startForTest(&s, 2);
        S.sched = &s;
        for (0..100) |_| _ = try s.spawn(S.forever, null);
        for (0..4) |_| _ = try s.spawn(S.spinner, null);
        s.shutdown(.cancel);
        s.shutdown(.cancel); // a second shutdown does nothing
        try testing.expectError(error.Shutdown, s.spawn(S.forever, null));
        try testing.expectError(error.Shutdown, s.drain());
    }
    // Finish: sleepers complete; the parked-forever ones are freed.
    {
        S.finished.store(0, .monotonic);
        var s: Scheduler = undefined;
        try startForTest(&s, 2);
        S.sched = &s;
        for (0..50) |_| _ = try s.spawn(S.forever, null);
        for (0..50) |_| _ = try s.spawn(S.napper, null);
        s.shutdown(.finish);
        try testing.expectEqual(@as(u32, 50), S.finished.load(.monotonic));
    }
    // (testing.allocator reports any leaked bookkeeping; the pools unmapped every stack.)
}

test "a bounded shutdown held up by a coroutine that never yields times out, stopped and nothing freed; the next shutdown joins and frees everything, and the scheduler restarts" {
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    const S = struct {
        fn forever(_: ?*anyopaque) callconv(.c) void {
            coroutine.park() catch unreachable;
        }
        fn yielder(_: ?*anyopaque) callconv(.c) void {
            while (true) coroutine.yield() catch unreachable;
        }
    };
    test_wait.NeverYields.reset();
    const bound = 50 * std.time.ns_per_ms;
    var s: Scheduler = undefined;
    try startForTest(&s, 2);
    for (0..10) |_| _ = try s.spawn(S.forever, null);
    _ = try s.spawn(test_wait.NeverYields.body, null);
    try test_wait.NeverYields.awaitRunning();
    const t0 = monotonicNs();
    try testing.expectError(error.Timeout, s.shutdownWithin(.cancel, bound));
    try testing.expect(monotonicNs() - t0 >= bound);
    // Stopped: no longer running, spawns refused; the join is left to the next shutdown.
    try testing.expect(!s.isRunning());
    try testing.expect(s.join_pending.load(.monotonic));
    try testing.expect(s.joinLeft()); // threads waiting on its scopes give up (`unjoined`)
    try testing.expectError(error.Shutdown, s.spawn(S.forever, null));
    // Still held up: a second bounded one (either mode: the outcome was decided) times out too.
    try testing.expectError(error.Timeout, s.shutdownWithin(.finish, bound));
    try testing.expect(s.join_pending.load(.monotonic));
    test_wait.NeverYields.letGo();
    // Joins and frees everything: the stuck coroutine's worker, the parked ones' stacks
    // (testing.allocator reports any leaked bookkeeping).
    s.shutdown(.cancel);
    try testing.expect(!s.join_pending.load(.monotonic));
    // Joined: a thread waiting on a scope of the next run waits for it again (before the
    // clear, it would give up at once, error.Shutdown, its children running).
    try testing.expect(!s.joinLeft());
    s.shutdown(.cancel); // a second does nothing
    // The same scheduler runs again, and a bounded shutdown of coroutines that yield (and
    // park) joins in time.
    try s.restart(testing.allocator, .{ .workers = 2, .stack_size = test_stack_size });
    for (0..10) |_| _ = try s.spawn(S.forever, null);
    for (0..4) |_| _ = try s.spawn(S.yielder, null);
    try s.shutdownWithin(.cancel, test_timeout);
    try testing.expect(!s.join_pending.load(.monotonic));
    try testing.expectEqual(@as(usize, 0), s.workers.len);
}

test "a bounded finishing shutdown whose drain does not run dry in time abandons the rest, as a cancel" {
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    const S = struct {
        var sched: *Scheduler = undefined;
        var woke = std.atomic.Value(bool).init(false);
        var ended: ?ShutdownMode = null;
        fn sleeper(_: ?*anyopaque) callconv(.c) void {
            sched.sleep(3600 * std.time.ns_per_s) catch return; // an hour: never, here
            woke.store(true, .monotonic);
        }
        fn endHook(mode: ShutdownMode) void {
            ended = mode;
        }
    };
    S.woke.store(false, .monotonic);
    S.ended = null;
    var s: Scheduler = undefined;
    try s.start(testing.allocator, .{ .workers = 2, .stack_size = test_stack_size, .end_hook = S.endHook });
    S.sched = &s;
    _ = try s.spawn(S.sleeper, null);
    const t0 = monotonicNs();
    // The drain never runs dry (an armed timer); unbounded, the finish waited the hour. It
    // stops 100 ms short of the bound, which the idle workers have to leave in: before, it
    // drained until the bound, and the join timed out at once (1 run in 3 here, loaded).
    // Very loaded, the idle workers may still not leave within those 100 ms (1 ReleaseSafe run
    // in 12 on 2 CPUs at a load average of ~30, session 40): the run is stopped all the same,
    // the join left pending (`shutdownBy`), which the next shutdown completes, here at once (the
    // workers read `s`, in this frame: left running, they ran into the next tests' frames). The
    // reserve itself is pinned by the next test, through its hooks, whatever the load.
    s.shutdownWithin(.finish, 400 * std.time.ns_per_ms) catch {
        try testing.expect(s.join_pending.load(.monotonic)); // the join's timeout, not another
        s.shutdown(.cancel);
    };
    try testing.expect(monotonicNs() - t0 < test_timeout / 2);
    try testing.expectEqual(@as(?ShutdownMode, .cancel), S.ended);
    try testing.expect(!S.woke.load(.monotonic));
    try testing.expect(!s.join_pending.load(.monotonic));
}

test "a bounded shutdown's waits share one deadline: the join after a finish's drain waits no longer, and the drain leaves it a share" {
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    const S = struct {
        var sched: *Scheduler = undefined;
        var drain_by: ?u64 = null;
        var join_by: ?u64 = null;
        fn sleeper(_: ?*anyopaque) callconv(.c) void {
            sched.sleep(3600 * std.time.ns_per_s) catch return; // an hour: never, here
        }
        fn drainBy(d: ?u64) void {
            drain_by = d;
        }
        fn joinBy(d: u64) void {
            join_by = d;
        }
    };
    S.drain_by = null;
    S.join_by = null;
    test_wait.NeverYields.reset();
    test_hooks.drain_by = S.drainBy;
    test_hooks.join_by = S.joinBy;
    defer {
        test_hooks.drain_by = null;
        test_hooks.join_by = null;
    }
    const bound = 200 * std.time.ns_per_ms; // a reserve of 50 ms, even if the call starts late
    var s: Scheduler = undefined;
    try startForTest(&s, 2);
    S.sched = &s;
    // The drain never runs dry (an armed timer), so it waits until the deadline; the join then
    // times out (a coroutine that never yields).
    _ = try s.spawn(S.sleeper, null);
    _ = try s.spawn(test_wait.NeverYields.body, null);
    try test_wait.NeverYields.awaitRunning();
    const t0 = monotonicNs();
    try testing.expectError(error.Timeout, s.shutdownWithin(.finish, bound));
    // One deadline, `bound` from the call, for the drain and the join; the drain stops short of
    // it by a quarter of the bound (`joinReserve`), left to the join. Before the one deadline,
    // the join waited `bound` more from the drain's end; before the reserve, the drain waited
    // until the deadline and the join of workers that were merely idle then timed out at once.
    try testing.expect(S.join_by.? >= t0 + bound);
    try testing.expect(S.drain_by.? < S.join_by.?);
    try testing.expect(S.join_by.? - S.drain_by.? <= bound / 4);
    test_wait.NeverYields.letGo();
    s.shutdown(.cancel);
    try testing.expect(!s.join_pending.load(.monotonic));
}

test "a bounded shutdown waits past its deadline for a spawn from outside that holds the lifecycle lock, and stops the run" {
    // Before, any holder of the lock timed the wait out at the deadline: a spawn from outside
    // holding it then made the call return error.Timeout with the run still going (nothing
    // stopped, nothing left to join). Only a shutdown holding it may keep it for good.
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    const S = struct {
        var sched: *Scheduler = undefined;
        var result = std.atomic.Value(u32).init(0); // 1: returned, 2: error.Timeout (the join's)
        var past = std.atomic.Value(bool).init(false);
        var rounds = std.atomic.Value(u32).init(0);
        var joiner: test_wait.Joiner = .{};
        fn shutter() void {
            defer joiner.done();
            const r: u32 = if (sched.shutdownWithin(.cancel, std.time.ns_per_ms)) 1 else |_| 2;
            result.store(r, .release);
        }
        fn lockWait(d: u64) void {
            _ = rounds.fetchAdd(1, .monotonic); // a count
            // Release: pairs with the test's acquire load (a flag only).
            if (monotonicNs() >= d) past.store(true, .release);
        }
    };
    S.result.store(0, .monotonic);
    S.past.store(false, .monotonic);
    S.rounds.store(0, .monotonic);
    S.joiner = .{};
    var s: Scheduler = undefined;
    try startForTest(&s, 1);
    defer if (s.isRunning() or s.join_pending.load(.monotonic)) s.shutdown(.cancel); // after the unlock below
    S.sched = &s;
    test_hooks.lock_wait = S.lockWait;
    defer test_hooks.lock_wait = null;
    // As a spawn from outside does (`spawnWith`), held here until the shutdown's deadline passed.
    s.lifecycle.lock();
    var locked = true;
    defer if (locked) s.unlockLifecycle();
    const t = try std.Thread.spawn(.{}, S.shutter, .{});
    const d = test_wait.Deadline.in(test_wait.default_ns, "the shutdown's lock wait to pass its deadline");
    // Acquire: pairs with the stores above (flags only).
    while (!S.past.load(.acquire) and !S.joiner.finished.load(.acquire)) try d.wait();
    // Past its deadline it sleeps (counted a waiter) while the spawn holds the lock: before
    // 72cfcba, it yielded in a loop for as long as the spawn's thread held the lock
    // (preempted, starved, in a debugger), and never counted itself a waiter.
    const asleep = test_wait.Deadline.in(test_wait.default_ns, "the shutdown's lock wait to sleep");
    while (s.lifecycle_waiters.load(.seq_cst) == 0) try asleep.wait();
    const from = monotonicNs();
    const rounds = S.rounds.load(.monotonic);
    // A while asleep: it goes round only as its backoff's timed sleeps end (a spawn's unlock
    // may miss the wake: `unlockLifecycleSpawn`), from 50 us doubling to 1 ms: at most one
    // round a millisecond once the backoff is at its cap, a few more on the way there. The
    // bound counts the time this thread saw pass between its two reads, not the 50 ms it
    // asked for: a yield on a loaded host may give the core away for longer, and the waiter
    // goes round meanwhile (with the 50 ms alone, 20 ms more before the second read failed).
    const later = test_wait.Deadline.in(50 * std.time.ns_per_ms, "");
    while (!later.passed()) std.Thread.yield() catch {};
    const went = S.rounds.load(.monotonic) - rounds;
    const seen_ns = monotonicNs() - from;
    try testing.expect(went <= seen_ns / lifecycle_backoff_max_ns + 8);
    try testing.expectEqual(@as(u32, 0), S.result.load(.acquire)); // still waiting
    // The worst case of a spawn's unlock (`unlockLifecycleSpawn`): its monotonic load read the
    // count stale, so nothing bumps the word. The waiter's backoff still looks again, within
    // 1 ms: before, past its deadline it slept until a bump, here for good (the join below
    // fails at its bound).
    s.lifecycle.unlock();
    locked = false;
    S.joiner.join(t, test_wait.default_ns, "the bounded shutdown");
    // Stopped, whatever it returned: its join shares the deadline, long past by then, and may
    // have been left to the next shutdown (error.Timeout, `join_pending`).
    try testing.expect(S.result.load(.acquire) != 0);
    try testing.expect(!s.isRunning());
    s.shutdown(.cancel); // the join, if it was left
    try testing.expect(!s.join_pending.load(.monotonic));
    try testing.expectEqual(@as(usize, 0), s.workers.len);
}

test "a bounded shutdown returns, not held by two threads outside the workers that spawn in a tight loop" {
    // Each spawn from outside takes `lifecycle` (`spawnWith`). Before, a stream of them from
    // two threads could keep retaking it between the shutdown's looks (its `tryLock` after a
    // sleep of up to 1 ms), holding `shutdownWithin` past its deadline for as long as they
    // went on: here, until the test stops them. The worst case is forced, not left to the
    // host's scheduling: each spawn holds the lock (its hook, under the lock as the C ABI's
    // handle hook is) until the shutdown has looked and failed once more, and the shutdown
    // looks again only once the next spawn holds it (`test_hooks.lock_wait`). Now spawns from
    // outside are refused while a shutdown is in progress (`lifecycle_pending`): the one in
    // flight lets go and the shutdown takes the lock. Measured in the shutdown's failed looks,
    // not in wall time: each spawn that sees a look (seq_cst, after the shutdown's count in)
    // is refused at its next try, so a handful of looks at most, whatever the host's load;
    // before, one more look for every spawn, without end. (Before, the test waited ten times
    // the bound, 500 ms, for the return: a loaded host may hold the shutdown's thread longer.)
    const max_looks = 64;
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    const S = struct {
        var sched: *Scheduler = undefined;
        var stop = std.atomic.Value(bool).init(false);
        var shutting = std.atomic.Value(bool).init(false);
        var spawned = std.atomic.Value(u32).init(0);
        var refused = std.atomic.Value(u32).init(0);
        var ran = std.atomic.Value(u32).init(0);
        var holds = std.atomic.Value(u32).init(0); // spawns that took the lock
        var looks = std.atomic.Value(u32).init(0); // the shutdown's failed looks
        var result = std.atomic.Value(u32).init(0); // 1: returned, 2: error.Timeout
        var joiners: [3]test_wait.Joiner = .{ .{}, .{}, .{} };
        const bound = 50 * std.time.ns_per_ms;
        fn body(_: ?*anyopaque) callconv(.c) void {
            _ = ran.fetchAdd(1, .monotonic); // a count
        }
        // Under the lock: until the shutdown, if it waits, looked once more and failed.
        fn held(_: ?*anyopaque, _: *Coroutine) anyerror!void {
            _ = holds.fetchAdd(1, .seq_cst);
            const seen = looks.load(.seq_cst);
            // Seq_cst: flags and counts read across threads, fresh as they get (no data).
            while (shutting.load(.seq_cst) and result.load(.seq_cst) == 0 and
                !stop.load(.seq_cst) and looks.load(.seq_cst) == seen) std.Thread.yield() catch {};
        }
        // The shutdown, after a failed look: until the next spawn holds the lock, or the
        // spawns are refused.
        fn lockWait(_: u64) void {
            const h = holds.load(.seq_cst);
            const r = refused.load(.seq_cst);
            _ = looks.fetchAdd(1, .seq_cst);
            const d = test_wait.Deadline.in(test_wait.default_ns, "");
            while (holds.load(.seq_cst) == h and refused.load(.seq_cst) == r and
                !stop.load(.seq_cst) and !d.passed()) std.Thread.yield() catch {};
        }
        fn spawner(i: usize) void {
            defer joiners[i].done();
            while (!stop.load(.seq_cst)) {
                // A bound on those not yet run (the one worker may be starved on a loaded
                // host): counts only.
                if (spawned.load(.monotonic) -% ran.load(.monotonic) >= 4096) {
                    std.Thread.yield() catch {};
                    continue;
                }
                const hook: Scheduler.CreateHook = .{ .f = held, .ctx = null };
                if (sched.spawnWith(body, null, ctx_mod.empty, .{ .hook = hook })) |_| {
                    _ = spawned.fetchAdd(1, .monotonic);
                } else |err| switch (err) {
                    error.Shutdown => _ = refused.fetchAdd(1, .seq_cst),
                    else => std.Thread.yield() catch {},
                }
            }
        }
        fn shutter() void {
            defer joiners[2].done();
            const r: u32 = if (sched.shutdownWithin(.cancel, bound)) 1 else |_| 2;
            result.store(r, .seq_cst);
        }
    };
    S.stop.store(false, .monotonic);
    S.shutting.store(false, .monotonic);
    inline for (.{ &S.spawned, &S.refused, &S.ran, &S.holds, &S.looks, &S.result }) |c| c.store(0, .monotonic);
    S.joiners = .{ .{}, .{}, .{} };
    var s: Scheduler = undefined;
    try startForTest(&s, 1);
    S.sched = &s;
    test_hooks.lock_wait = S.lockWait;
    defer test_hooks.lock_wait = null;
    var threads: [2]std.Thread = undefined;
    var started: usize = 0;
    defer {
        S.stop.store(true, .seq_cst);
        for (threads[0..started], 0..) |t, i| S.joiners[i].join(t, test_wait.default_ns, "a spawner");
        if (s.isRunning() or s.join_pending.load(.monotonic)) s.shutdown(.cancel);
    }
    while (started < 2) : (started += 1) threads[started] = try std.Thread.spawn(.{}, S.spawner, .{started});
    const d = test_wait.Deadline.in(test_wait.default_ns, "the spawners to spawn");
    while (S.spawned.load(.monotonic) < 100) try d.wait();
    S.shutting.store(true, .seq_cst);
    const t = try std.Thread.spawn(.{}, S.shutter, .{});
    // Until it returns, or has looked more often than it may, the spawns going on meanwhile
    // (the deadline a bound against a hang only).
    const within = test_wait.Deadline.in(test_wait.default_ns, "");
    const returned = while (!within.passed()) {
        if (S.result.load(.seq_cst) != 0) break true;
        if (S.looks.load(.seq_cst) > max_looks) break false;
        std.Thread.yield() catch {};
    } else S.result.load(.seq_cst) != 0;
    // Refused from the shutdown's start on (after its return too, the run stopped).
    const refusal = test_wait.Deadline.in(test_wait.default_ns, "");
    while (returned and S.refused.load(.seq_cst) == 0 and !refusal.passed()) std.Thread.yield() catch {};
    S.stop.store(true, .seq_cst);
    S.joiners[2].join(t, test_wait.default_ns, "the bounded shutdown");
    try testing.expect(returned);
    try testing.expect(S.looks.load(.seq_cst) <= max_looks);
    try testing.expect(S.refused.load(.seq_cst) > 0);
    try testing.expect(!s.isRunning());
}

test "a spawn from outside while a finishing shutdown drains is refused at once, not held until the drain ends" {
    // Before, it waited on `lifecycle`, which the shutdown holds while it drains (here for as
    // long as the test lets it: an armed timer of an hour), and then got error.Shutdown anyway,
    // the run stopped. Now it is refused while the shutdown is in progress (`lifecycle_pending`),
    // the run still on and the drain going.
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    const S = struct {
        var sched: *Scheduler = undefined;
        var finished = std.atomic.Value(bool).init(false);
        var spawn_rc = std.atomic.Value(u32).init(0); // 1: error.Shutdown, 2: anything else
        var joiners: [2]test_wait.Joiner = .{ .{}, .{} };
        fn sleeper(_: ?*anyopaque) callconv(.c) void {
            sched.sleep(3600 * std.time.ns_per_s) catch return; // an hour: never, here
        }
        fn nop(_: ?*anyopaque) callconv(.c) void {}
        fn finisher() void {
            defer joiners[0].done();
            sched.shutdown(.finish);
            finished.store(true, .release); // pairs with the test's acquire load
        }
        fn spawner() void {
            defer joiners[1].done();
            const r: u32 = if (sched.spawn(nop, null)) |_| 2 else |err| if (err == error.Shutdown) 1 else 2;
            spawn_rc.store(r, .release); // pairs with the test's acquire loads
        }
    };
    S.finished.store(false, .monotonic);
    S.spawn_rc.store(0, .monotonic);
    S.joiners = .{ .{}, .{} };
    var s: Scheduler = undefined;
    try startForTest(&s, 1);
    S.sched = &s;
    _ = try s.spawn(S.sleeper, null);
    const fin = try std.Thread.spawn(.{}, S.finisher, .{});
    var spawner: ?std.Thread = null;
    defer {
        s.cancelPending(); // ends the drain
        S.joiners[0].join(fin, test_wait.default_ns, "the finishing shutdown");
        if (spawner) |t| S.joiners[1].join(t, test_wait.default_ns, "the spawning thread");
    }
    // It holds the lock (and says so) before it drains; the run goes on meanwhile. Its count
    // read here too: the spawning thread, started after this load, reads it (coherence), where
    // the hint's monotonic load orders nothing about the count's monotonic increment.
    const d = test_wait.Deadline.in(test_wait.default_ns, "the finishing shutdown to hold the lock");
    while (!s.lifecycle_shutdown.load(.monotonic) or s.lifecycle_pending.load(.monotonic) == 0) try d.wait();
    try testing.expect(s.isRunning());
    spawner = try std.Thread.spawn(.{}, S.spawner, .{});
    // Generous: refused at once, where before it waited for the drain, which here never ends
    // before the cancel below.
    const answered = test_wait.Deadline.in(5 * std.time.ns_per_s, "");
    while (S.spawn_rc.load(.acquire) == 0 and !answered.passed()) std.Thread.yield() catch {};
    const rc = S.spawn_rc.load(.acquire);
    const draining = !S.finished.load(.acquire) and s.isRunning();
    try testing.expectEqual(@as(u32, 1), rc);
    try testing.expect(draining);
}

/// The restart tests' shared pieces. A thread held at a test hook (`hold`, called from the
/// hook) until the test lets it go (`letGo`), or `default_ns` passed.
const Gate = struct {
    inside: std.atomic.Value(bool) = .init(false),
    release: std.atomic.Value(bool) = .init(false),

    fn hold(g: *Gate) void {
        g.inside.store(true, .release); // pairs with `awaitInside`'s acquire load
        // Acquire: pairs with `letGo`'s release store.
        const d = test_wait.Deadline.in(test_wait.default_ns, "");
        while (!g.release.load(.acquire) and !d.passed()) std.Thread.yield() catch {};
    }

    /// Until a thread is in `hold`, failing after `default_ns` (saying `what` it waited for).
    fn awaitInside(g: *Gate, what: []const u8) !void {
        const d = test_wait.Deadline.in(test_wait.default_ns, what);
        while (!g.inside.load(.acquire)) try d.wait();
    }

    fn letGo(g: *Gate) void {
        g.release.store(true, .release); // pairs with `hold`'s acquire load
    }
};

/// A `restart` (1 worker, the tests' stacks) on a thread of its own, raced with a holder of
/// `lifecycle`. At a fixed address from `begin` until `join`.
const Restarter = struct {
    sched: *Scheduler,
    tid: std.atomic.Value(std.Thread.Id) = .init(0),
    /// 1: done, 2: failed.
    result: std.atomic.Value(u32) = .init(0),
    joiner: test_wait.Joiner = .{},
    thread: ?std.Thread = null,

    fn begin(r: *Restarter) !void {
        r.thread = try std.Thread.spawn(.{}, main, .{r});
    }

    fn main(r: *Restarter) void {
        defer r.joiner.done();
        r.tid.store(std.Thread.getCurrentId(), .release); // pairs with `awaitAsleep`'s acquire load
        const ok = if (r.sched.restart(testing.allocator, .{ .workers = 1, .stack_size = test_stack_size })) true else |_| false;
        r.result.store(if (ok) 1 else 2, .release); // pairs with the test's acquire loads
    }

    /// Until its thread sleeps (waiting on the lock), failing after `default_ns`.
    fn awaitAsleep(r: *Restarter) !void {
        const d = test_wait.Deadline.in(test_wait.default_ns, "the restart to wait for the lock");
        while (true) {
            const tid = r.tid.load(.acquire);
            if (tid != 0) if (test_wait.threadState(tid)) |st| if (st == 'S') break;
            try d.wait();
        }
    }

    /// Joins its thread, if it was started and not joined yet.
    fn join(r: *Restarter) void {
        const t = r.thread orelse return;
        r.joiner.join(t, test_wait.default_ns, "the restarting thread");
        r.thread = null;
    }
};

/// A spawn from outside the workers onto `s`'s run: let in, and run.
fn expectSpawnRuns(s: *Scheduler) !void {
    const S = struct {
        var ran = std.atomic.Value(bool).init(false);
        fn body(_: ?*anyopaque) callconv(.c) void {
            ran.store(true, .release); // pairs with the acquire load below
        }
    };
    S.ran.store(false, .monotonic);
    _ = try s.spawn(S.body, null);
    const d = test_wait.Deadline.in(test_wait.default_ns, "the spawned coroutine to run");
    while (!S.ran.load(.acquire)) try d.wait();
}

test "a restart while another thread's shutdown of the stopped run is on its way out: spawns from outside the new run are let in" {
    // Two threads shut the scheduler down: the first call stops it, the second finds it
    // stopped and leaves; a restart once the first returned may come while the second is past
    // its unlock, not yet counted out of `lifecycle_pending` (held there by
    // `test_hooks.before_uncount`). Before, the restart reset the count to 0 and that late
    // decrement wrapped it: every spawn from outside the workers on the new run was
    // error.Shutdown, for good.
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    const S = struct {
        var sched: *Scheduler = undefined;
        var gate: Gate = .{};
        var joiner: test_wait.Joiner = .{};
        // On the second shutdown's thread, past its unlock: until the test restarted.
        fn uncount() void {
            test_hooks.before_uncount = null; // once
            gate.hold();
        }
        fn second() void {
            defer joiner.done();
            sched.shutdown(.cancel); // the run is stopped: nothing to do
        }
    };
    S.gate = .{};
    S.joiner = .{};
    var s: Scheduler = undefined;
    try startForTest(&s, 1);
    S.sched = &s;
    s.shutdown(.cancel); // the first call: stops the run and frees it
    test_hooks.before_uncount = S.uncount;
    defer test_hooks.before_uncount = null;
    var second: ?std.Thread = try std.Thread.spawn(.{}, S.second, .{});
    defer if (second) |t| {
        S.gate.letGo();
        S.joiner.join(t, test_wait.default_ns, "the second shutdown");
    };
    try S.gate.awaitInside("the second shutdown to let go of the lock");
    try testing.expectEqual(@as(u32, 1), s.lifecycle_pending.load(.monotonic)); // its count
    try s.restart(testing.allocator, .{ .workers = 1, .stack_size = test_stack_size });
    defer s.shutdown(.cancel);
    S.gate.letGo();
    S.joiner.join(second.?, test_wait.default_ns, "the second shutdown");
    second = null;
    // From this thread, outside the workers.
    try expectSpawnRuns(&s);
    try testing.expectEqual(@as(u32, 0), s.lifecycle_pending.load(.monotonic));
}

test "a restart waits for a spawn from outside on the stopped run that holds the lifecycle lock, which is refused; the new run takes spawns" {
    // A spawn from outside the workers takes `lifecycle` before it reads the state: one on a
    // run just shut down (a thread spawning in a loop, while another shuts the scheduler down
    // and restarts it) may still hold it as the restart begins (held there by
    // `test_hooks.spawn_locked`). Before, the restart built the mutex again under it: the
    // spawn's unlock let go of a lock it no longer held (a Debug build's mutex panics; a
    // release build's lets the next locker in beside it), and it read the fields being
    // rebuilt. Now the restart keeps the lock and takes it: it waits for the spawn, which
    // finds the run stopped.
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    const S = struct {
        var sched: *Scheduler = undefined;
        var gate: Gate = .{};
        var rc = std.atomic.Value(u32).init(0); // 1: spawned, 2: error.Shutdown, 3: else
        var joiner: test_wait.Joiner = .{};
        // On the spawning thread, holding the lock: until the test lets it go.
        fn locked() void {
            test_hooks.spawn_locked = null; // once
            gate.hold();
        }
        fn spawner() void {
            defer joiner.done();
            const r: u32 = if (sched.spawn(body, null)) |_| 1 else |err| if (err == error.Shutdown) 2 else 3;
            rc.store(r, .release); // pairs with the test's acquire load
        }
        fn body(_: ?*anyopaque) callconv(.c) void {}
    };
    S.gate = .{};
    S.rc.store(0, .monotonic);
    S.joiner = .{};
    var s: Scheduler = undefined;
    try startForTest(&s, 1);
    S.sched = &s;
    s.shutdown(.cancel);
    test_hooks.spawn_locked = S.locked;
    defer test_hooks.spawn_locked = null;
    var spawner: ?std.Thread = null;
    var restarter: Restarter = .{ .sched = &s };
    defer {
        S.gate.letGo();
        if (spawner) |t| S.joiner.join(t, test_wait.default_ns, "the spawning thread");
        restarter.join();
        if (s.isRunning()) s.shutdown(.cancel);
    }
    spawner = try std.Thread.spawn(.{}, S.spawner, .{});
    try S.gate.awaitInside("the spawn to hold the lock");
    try restarter.begin();
    // The restart waits on the lock (its thread asleep), not done while the spawn holds it.
    try restarter.awaitAsleep();
    try testing.expectEqual(@as(u32, 0), restarter.result.load(.acquire));
    S.gate.letGo();
    S.joiner.join(spawner.?, test_wait.default_ns, "the spawning thread");
    spawner = null;
    restarter.join();
    try testing.expectEqual(@as(u32, 2), S.rc.load(.acquire)); // the run it saw was stopped
    try testing.expectEqual(@as(u32, 1), restarter.result.load(.acquire));
    // The new run takes spawns from outside (the lock let go), and runs them.
    try expectSpawnRuns(&s);
}

test "a restart while another thread's shutdown still holds the lifecycle lock, its run stopping, waits for it, then starts the new run" {
    // Zig callers may restart on one thread while a shutdown returns on another (the C ABI
    // orders both under its own lock). Here the shutdown is held in its last stage, under
    // `lifecycle` with its join still pending (its `unmap_hook`), the run no longer running.
    // Before, the restart did not take the lock: it found the join pending (a Debug build's
    // assertion fails; a release build's rebuilt the scheduler under the shutdown, which then
    // freed the new run's pool and let go of a mutex built again under it). Now it waits for
    // the shutdown's unlock.
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    const S = struct {
        var sched: *Scheduler = undefined;
        var gate: Gate = .{};
        var joiner: test_wait.Joiner = .{};
        // On the shutdown's thread, under the lock, the join pending: until the test lets go.
        fn unmap(_: ?u64) bool {
            gate.hold();
            return true;
        }
        fn shutter() void {
            defer joiner.done();
            sched.shutdown(.cancel);
        }
    };
    S.gate = .{};
    S.joiner = .{};
    var s: Scheduler = undefined;
    try s.start(testing.allocator, .{ .workers = 1, .stack_size = test_stack_size, .unmap_hook = S.unmap });
    S.sched = &s;
    var shutter: ?std.Thread = null;
    var restarter: Restarter = .{ .sched = &s };
    defer {
        S.gate.letGo();
        if (shutter) |t| S.joiner.join(t, test_wait.default_ns, "the shutdown");
        restarter.join();
        if (s.isRunning()) s.shutdown(.cancel);
    }
    shutter = try std.Thread.spawn(.{}, S.shutter, .{});
    try S.gate.awaitInside("the shutdown to reach its last stage");
    try testing.expect(!s.isRunning());
    try restarter.begin();
    // The restart waits on the lock (its thread asleep), not done while the shutdown holds it.
    try restarter.awaitAsleep();
    try testing.expectEqual(@as(u32, 0), restarter.result.load(.acquire));
    S.gate.letGo();
    S.joiner.join(shutter.?, test_wait.default_ns, "the shutdown");
    shutter = null;
    restarter.join();
    try testing.expectEqual(@as(u32, 1), restarter.result.load(.acquire));
    try testing.expect(s.isRunning());
    try expectSpawnRuns(&s);
}

test "a restart keeps unjoined and cancel_pending, read and stored without a lock by threads of the earlier run, and clears cancel_pending" {
    // A thread waiting on a scope of the earlier run reads `unjoined` (`joinLeft`), and a
    // cancel of it from another thread stores `cancel_pending` (`cancelPending`), without a
    // lock. Before, the restart rebuilt both with plain stores under those atomic accesses: a
    // data race (this test fails under ThreadSanitizer, `zig build test -Dtsan=true`). A cancel
    // of the earlier run must not cut the new run's first finish short: the restart clears
    // the flag.
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    const S = struct {
        var sched: *Scheduler = undefined;
        var stop = std.atomic.Value(bool).init(false);
        var rounds = std.atomic.Value(u32).init(0);
        var joiner: test_wait.Joiner = .{};
        // Monotonic throughout: a happens-before edge from this thread to the restart would
        // hide the race from the sanitizer.
        fn outsider() void {
            defer joiner.done();
            while (!stop.load(.monotonic)) {
                sched.cancelPending();
                _ = sched.joinLeft();
                _ = rounds.fetchAdd(1, .monotonic);
                std.Thread.yield() catch {};
            }
        }
    };
    S.stop.store(false, .monotonic);
    S.rounds.store(0, .monotonic);
    S.joiner = .{};
    var s: Scheduler = undefined;
    try startForTest(&s, 1);
    S.sched = &s;
    s.shutdown(.cancel);
    // A cancel of the stopped run: cleared by the restart.
    s.cancelPending();
    {
        try s.restart(testing.allocator, .{ .workers = 1, .stack_size = test_stack_size });
        defer s.shutdown(.cancel);
        try testing.expect(!s.cancel_pending.load(.acquire));
        try testing.expect(!s.joinLeft());
    }
    // Now with a thread of the stopped run at them while the restart runs.
    const t = try std.Thread.spawn(.{}, S.outsider, .{});
    var joined = false;
    defer if (!joined) {
        S.stop.store(true, .monotonic);
        S.joiner.join(t, test_wait.default_ns, "the outside thread");
    };
    const d = test_wait.Deadline.in(test_wait.default_ns, "the outside thread to go round");
    while (S.rounds.load(.monotonic) < 2) try d.wait();
    try s.restart(testing.allocator, .{ .workers = 1, .stack_size = test_stack_size });
    defer s.shutdown(.cancel);
    const after = S.rounds.load(.monotonic);
    const d2 = test_wait.Deadline.in(test_wait.default_ns, "the outside thread to go round again");
    while (S.rounds.load(.monotonic) -% after < 2) try d2.wait();
    S.stop.store(true, .monotonic);
    S.joiner.join(t, test_wait.default_ns, "the outside thread");
    joined = true;
    try testing.expect(s.isRunning());
    try testing.expect(!s.joinLeft());
}

test "a begin whose worker or watchdog thread does not start fails with nothing left running or allocated; stats, spawn, shutdown and restart after it behave (leak-checked)" {
    // Before, the failed begin freed the workers' array and the pool but left `s.workers`
    // pointing at the array (`workerCount` still said 2; `workerStats`, `liveCount` and
    // `busyCount` read freed memory) and the state `stopping`. Now it leaves what a shutdown
    // leaves. The thread that fails is `test_hooks.fail_thread`'s; `testing.allocator` checks
    // that nothing of the failed runs stays allocated.
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    const S = struct {
        var ran = std.atomic.Value(u32).init(0);
        fn body(_: ?*anyopaque) callconv(.c) void {
            _ = ran.fetchAdd(1, .release); // pairs with `expectRuns`'s acquire load
        }
        /// After a failed begin: as after a shutdown, nothing to read, nothing to stop.
        fn expectNothing(s: *Scheduler) !void {
            // No dangling array either (the statistics would not read it: `workers_live`).
            try testing.expectEqual(@as(usize, 0), s.workers.len);
            try testing.expectEqual(@as(usize, 0), s.workerCount());
            try testing.expect(s.workerStats(0) == null);
            try testing.expect(!s.isRunning());
            try testing.expectEqual(@as(u64, 0), s.liveCount());
            try testing.expectEqual(@as(u64, 0), s.busyCount());
            try testing.expectError(error.Shutdown, s.spawn(body, null));
            try testing.expectError(error.Shutdown, s.drainFor(0));
            s.shutdown(.cancel); // nothing to do
            try testing.expectEqual(@as(usize, 0), s.workerCount());
            try testing.expect(!s.join_pending.load(.monotonic));
        }
        /// A run that works: a spawn runs, its workers' stats read it, a shutdown ends it.
        fn expectRuns(s: *Scheduler) !void {
            const before = ran.load(.acquire);
            _ = try s.spawn(body, null);
            try s.drainFor(test_timeout);
            try testing.expectEqual(before + 1, ran.load(.acquire));
            try testing.expectEqual(@as(usize, 2), s.workerCount());
            var runs: u64 = 0;
            for (0..s.workerCount()) |i| runs += s.workerStats(i).?.runs;
            try testing.expect(runs >= 1);
            try testing.expect(s.workerStats(s.workerCount()) == null);
            s.shutdown(.cancel);
            try testing.expect(s.workerStats(0) == null); // no workers once shut down
        }
    };
    S.ran.store(0, .monotonic);
    defer test_hooks.fail_thread = null;
    const opts: Options = .{ .workers = 2, .stack_size = test_stack_size };
    // Worker 0 (none started), worker 1 (one started, then joined), the watchdog (both).
    for ([_]usize{ 0, 1, 2 }) |k| {
        var s: Scheduler = undefined;
        test_hooks.fail_thread = k;
        try testing.expectError(error.OutOfMemory, s.start(testing.allocator, opts));
        try S.expectNothing(&s);
        test_hooks.fail_thread = null;
        try s.restart(testing.allocator, opts);
        try S.expectRuns(&s);
        // A restart of a run that was shut down fails the same way.
        test_hooks.fail_thread = k;
        try testing.expectError(error.OutOfMemory, s.restart(testing.allocator, opts));
        try S.expectNothing(&s);
        test_hooks.fail_thread = null;
        try s.restart(testing.allocator, opts);
        try S.expectRuns(&s);
    }
}

test "a reader of the workers' statistics on another thread holds a shutdown's free of the workers until it leaves; then it finds none" {
    // Before, `workerStats` (and `workerCount`, `liveCount`, `busyCount`) read `workers` with
    // nothing to stop a shutdown on another thread from freeing the array under it (or a
    // restart from rebuilding it): here the shutdown returned while the reader was held
    // between its bounds check and its read, which then read freed memory. Now the shutdown
    // waits for it (`dropWorkers`, asleep in `awaitNone`: `quiesce_waiters` counts it).
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    const S = struct {
        var sched: *Scheduler = undefined;
        var gate: Gate = .{};
        var runs = std.atomic.Value(u64).init(0);
        var shut = std.atomic.Value(bool).init(false);
        var joiners: [2]test_wait.Joiner = .{ .{}, .{} };
        fn hold() void {
            test_hooks.stats_reading = null; // once
            gate.hold();
        }
        fn body(_: ?*anyopaque) callconv(.c) void {}
        fn reader() void {
            defer joiners[0].done();
            const st = sched.workerStats(0) orelse return;
            runs.store(st.runs, .release); // pairs with the test's acquire load (after the join)
        }
        fn shutter() void {
            defer joiners[1].done();
            sched.shutdown(.cancel);
            shut.store(true, .release); // pairs with the test's acquire loads
        }
    };
    S.gate = .{};
    S.runs.store(0, .monotonic);
    S.shut.store(false, .monotonic);
    S.joiners = .{ .{}, .{} };
    var s: Scheduler = undefined;
    try startForTest(&s, 1);
    S.sched = &s;
    _ = try s.spawn(S.body, null);
    try s.drainFor(test_timeout);
    try testing.expectEqual(@as(u64, 1), s.workerStats(0).?.runs);
    test_hooks.stats_reading = S.hold;
    defer test_hooks.stats_reading = null;
    var threads: [2]?std.Thread = .{ null, null };
    defer {
        S.gate.letGo();
        for (threads, 0..) |th, i| if (th) |t| S.joiners[i].join(t, test_wait.default_ns, "a test thread");
        if (s.isRunning()) s.shutdown(.cancel);
    }
    threads[0] = try std.Thread.spawn(.{}, S.reader, .{});
    try S.gate.awaitInside("the reader to hold the workers");
    threads[1] = try std.Thread.spawn(.{}, S.shutter, .{});
    // Until the shutdown waits for the reader (it counts itself a waiter in `awaitNone`: only
    // the reader is left to wait for), or returned (freed the workers under the reader).
    const d = test_wait.Deadline.in(test_wait.default_ns, "the shutdown to wait for the reader");
    while (s.quiesce_waiters.load(.monotonic) == 0 and !S.shut.load(.acquire)) try d.wait();
    try testing.expect(!S.shut.load(.acquire));
    try testing.expectEqual(@as(u32, 1), s.readers.load(.monotonic));
    S.gate.letGo();
    S.joiners[0].join(threads[0].?, test_wait.default_ns, "the reader");
    threads[0] = null;
    S.joiners[1].join(threads[1].?, test_wait.default_ns, "the shutdown");
    threads[1] = null;
    try testing.expectEqual(@as(u64, 1), S.runs.load(.acquire)); // read before the free
    try testing.expect(S.shut.load(.acquire));
    try testing.expectEqual(@as(usize, 0), s.workerCount());
    try testing.expect(s.workerStats(0) == null);
    try testing.expectEqual(@as(u32, 0), s.readers.load(.monotonic));
}

test "a reader of the statistics that finds the workers hidden does not hold up the shutdown's wait for readers" {
    // Before, every reader counted itself in `readers` before it looked at `workers_live`, also
    // one that then found the workers hidden and read nothing: a statistics loop on another
    // thread kept the count above 0 at most of the shutdown's looks, and an untimed shutdown
    // waited for as long as it ran. Here one such reader is held right after it found none
    // (`found_no_workers`), while the shutdown waits for a reader that found the workers: once
    // that one leaves, the shutdown returns, the other still held (before, it waited for it).
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    const S = struct {
        var sched: *Scheduler = undefined;
        var inside: Gate = .{};
        var hidden: Gate = .{};
        var shut = std.atomic.Value(bool).init(false);
        var joiners: [3]test_wait.Joiner = .{ .{}, .{}, .{} };
        fn holdInside() void {
            test_hooks.stats_reading = null; // once
            inside.hold();
        }
        fn holdHidden() void {
            test_hooks.found_no_workers = null; // once
            hidden.hold();
        }
        fn reader() void {
            defer joiners[0].done();
            _ = sched.workerStats(0);
        }
        fn shutter() void {
            defer joiners[1].done();
            sched.shutdown(.cancel);
            shut.store(true, .release); // pairs with the test's acquire loads
        }
        fn late() void {
            defer joiners[2].done();
            _ = sched.workerStats(0);
        }
    };
    S.inside = .{};
    S.hidden = .{};
    S.shut.store(false, .monotonic);
    S.joiners = .{ .{}, .{}, .{} };
    var s: Scheduler = undefined;
    try startForTest(&s, 1);
    S.sched = &s;
    test_hooks.stats_reading = S.holdInside;
    defer test_hooks.stats_reading = null;
    defer test_hooks.found_no_workers = null;
    var threads: [3]?std.Thread = .{ null, null, null };
    defer {
        S.inside.letGo();
        S.hidden.letGo();
        for (threads, 0..) |th, i| if (th) |t| S.joiners[i].join(t, test_wait.default_ns, "a test thread");
        if (s.isRunning()) s.shutdown(.cancel);
    }
    threads[0] = try std.Thread.spawn(.{}, S.reader, .{});
    try S.inside.awaitInside("the first reader to hold the workers");
    threads[1] = try std.Thread.spawn(.{}, S.shutter, .{});
    // Until the shutdown hid the workers and waits for the first reader.
    const d = test_wait.Deadline.in(test_wait.default_ns, "the shutdown to wait for the reader");
    while (s.quiesce_waiters.load(.monotonic) == 0 and !S.shut.load(.acquire)) try d.wait();
    try testing.expect(!S.shut.load(.acquire));
    test_hooks.found_no_workers = S.holdHidden;
    threads[2] = try std.Thread.spawn(.{}, S.late, .{});
    try S.hidden.awaitInside("the second reader to find no workers");
    S.inside.letGo();
    // The shutdown returns with the second reader still held (its gate lets go only below).
    const returned = test_wait.Deadline.in(10 * std.time.ns_per_s, "the shutdown to return, a reader that found none held");
    while (!S.shut.load(.acquire)) try returned.wait();
    try testing.expectEqual(@as(u32, 0), s.readers.load(.monotonic));
    S.hidden.letGo();
    for (&threads, 0..) |*th, i| if (th.*) |t| {
        S.joiners[i].join(t, test_wait.default_ns, "a test thread");
        th.* = null;
    };
    try testing.expectEqual(@as(usize, 0), s.workerCount());
    try testing.expectEqual(@as(u32, 0), s.readers.load(.monotonic));
}

test "a start refused before its run is built (bad options, no memory for the workers) leaves a stopped scheduler that shuts down and restarts" {
    // Before, `start` left `s` undefined on such an error (it assigned it only once the pool
    // and the workers' array were had): a `shutdown` or a `restart` after it read garbage (a
    // Debug build's 0xaa: an invalid state, a mutex never unlocked). The workers' array is the
    // first allocation of a start (the pool's `init` allocates nothing).
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    var failing = std.testing.FailingAllocator.init(testing.allocator, .{ .fail_index = 0 });
    const cases = [_]struct { allocator: std.mem.Allocator, stack_size: u32, err: Error }{
        .{ .allocator = testing.allocator, .stack_size = 1, .err = error.InvalidArgument },
        .{ .allocator = failing.allocator(), .stack_size = test_stack_size, .err = error.OutOfMemory },
    };
    for (cases) |c| {
        var s: Scheduler = undefined;
        try testing.expectError(c.err, s.start(c.allocator, .{ .workers = 1, .stack_size = c.stack_size }));
        try testing.expect(!s.isRunning());
        try testing.expectEqual(@as(usize, 0), s.workerCount());
        try testing.expectError(error.Shutdown, s.spawn(test_wait.NeverYields.body, null));
        s.shutdown(.cancel); // nothing to do
        try s.restart(testing.allocator, .{ .workers = 1, .stack_size = test_stack_size });
        try testing.expect(s.isRunning());
        try expectSpawnRuns(&s);
        s.shutdown(.cancel);
    }
}

test "the statistics read in a loop on one thread while another shuts the scheduler down and restarts it, failing some restarts" {
    // The unsynchronised reads `enterWorkers` replaced: a shutdown's free, a failed begin's
    // free and a restart's rebuild of `workers` under a reader (ThreadSanitizer: a data race;
    // a safe build: garbage counts or a crash). Bounded: a fixed number of rounds. The figures
    // are checked too, not only read: each round spawns `per_round` coroutines, and once they
    // are all done (`phase` odd: through the shutdown and the restart) none may read live or
    // busy. Before, a reader between `dropWorkers` and `abandonAll`'s fold read the outside
    // spawns' count alone (`per_round`, all finished) as live.
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    const per_round = 4;
    const S = struct {
        var sched: *Scheduler = undefined;
        var stop = std.atomic.Value(bool).init(false);
        var reads = std.atomic.Value(u64).init(0);
        var bad = std.atomic.Value(u32).init(0);
        /// Even while coroutines may run; odd once all of this round's are done (the test's
        /// release increments, the reader's acquire loads).
        var phase = std.atomic.Value(u32).init(0);
        /// The first figure found wrong, for the failure's message (under `bad`'s first count).
        var what: []const u8 = "";
        var value: u64 = 0;
        var joiner: test_wait.Joiner = .{};
        fn body(_: ?*anyopaque) callconv(.c) void {}
        fn wrong(w: []const u8, v: u64) void {
            if (bad.fetchAdd(1, .monotonic) == 0) {
                what = w;
                value = v;
            }
        }
        fn reader() void {
            defer joiner.done();
            // Acquire: pairs with the test's release store (a flag only).
            while (!stop.load(.acquire)) {
                const before = phase.load(.acquire); // pairs with the test's release increment
                const n = sched.workerCount();
                if (n != 0 and n != 2) wrong("workerCount", n);
                if (sched.workerStats(0)) |st| {
                    if (st.queue_depth > per_round) wrong("queue_depth", st.queue_depth);
                }
                const live = sched.liveCount();
                const busy = sched.busyCount();
                // A wrapped (negative) count or more than were spawned: wrong at any time.
                if (live > per_round) wrong("liveCount", live);
                if (busy > per_round) wrong("busyCount", busy);
                // All done, before and after the reads (nothing spawned meanwhile): none live
                // or busy, through the shutdown's free of the workers and the restart.
                if (before % 2 == 1 and phase.load(.acquire) == before) {
                    if (live != 0) wrong("liveCount with all done", live);
                    if (busy != 0) wrong("busyCount with all done", busy);
                }
                _ = reads.fetchAdd(1, .monotonic); // a count
            }
        }
    };
    S.stop.store(false, .monotonic);
    S.reads.store(0, .monotonic);
    S.bad.store(0, .monotonic);
    S.phase.store(0, .monotonic);
    S.joiner = .{};
    var s: Scheduler = undefined;
    try startForTest(&s, 2);
    S.sched = &s;
    defer test_hooks.fail_thread = null;
    const th = try std.Thread.spawn(.{}, S.reader, .{});
    var joined = false;
    defer {
        S.stop.store(true, .release);
        if (!joined) S.joiner.join(th, test_wait.default_ns, "the reader");
        if (s.isRunning()) s.shutdown(.cancel);
    }
    const opts: Options = .{ .workers = 2, .stack_size = test_stack_size };
    for (0..40) |round| {
        for (0..per_round) |_| _ = try s.spawn(S.body, null); // coroutines for the counts
        try s.drainFor(test_timeout);
        // Done: each is counted out by its worker after its entry returned (bounded wait).
        const d = test_wait.Deadline.in(test_wait.default_ns, "the spawned coroutines' count out");
        while (s.liveCount() != 0 or s.busyCount() != 0) try d.wait();
        _ = S.phase.fetchAdd(1, .release); // odd: all done (pairs with the reader's acquire)
        s.shutdown(.cancel);
        try testing.expectEqual(@as(u64, 0), s.liveCount());
        try testing.expectEqual(@as(u64, 0), s.abandoned_at_join);
        // Every fourth restart fails (its second worker's thread): a failed begin's free.
        test_hooks.fail_thread = if (round % 4 == 3) 1 else null;
        if (s.restart(testing.allocator, opts)) {} else |err| try testing.expectEqual(error.OutOfMemory, err);
        test_hooks.fail_thread = null;
        if (!s.isRunning()) try s.restart(testing.allocator, opts);
        try testing.expectEqual(@as(u64, 0), s.liveCount());
        _ = S.phase.fetchAdd(1, .release); // even: spawns to come
    }
    S.stop.store(true, .release);
    S.joiner.join(th, test_wait.default_ns, "the reader");
    joined = true;
    if (S.bad.load(.monotonic) != 0) {
        std.debug.print("{d} wrong figures; the first: {s} = {d}\n", .{ S.bad.load(.monotonic), S.what, S.value });
    }
    try testing.expectEqual(@as(u32, 0), S.bad.load(.monotonic));
    try testing.expect(S.reads.load(.monotonic) > 0);
}

test "liveCount and busyCount never read below the count: coroutines spawned and finished between their reads of the counts out and in" {
    // A parent spawned from outside (counted in `live`, `ext_in`) and its child spawned on a
    // worker (that worker's `spawned`, `busy_in`) both run and finish (`finished`, `busy_out`)
    // while a reader is between its two halves of reads (`between_count_reads`). Both live and
    // busy for a while in that span: each count must read 2 (read below 0 is the wrong
    // figure). Before, `liveIn` read `live` first and the workers' `finished` after: the
    // outside spawn missed, its end counted, 2^64 - 1 (the statistics test under qemu read
    // 2^64 - 4, a round's four outside spawns). `collectBusy` reads its outs first; read the
    // other way round it would saturate to 0 (`busyCount`'s `-|`), a figure wrong but hidden.
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    const S = struct {
        var sched: *Scheduler = undefined;
        /// The hook acts once per arming (its own drain's reads find it disarmed).
        var armed = std.atomic.Value(bool).init(false);
        var ran = std.atomic.Value(u32).init(0);
        var failed: ?anyerror = null;
        fn child(_: ?*anyopaque) callconv(.c) void {
            _ = ran.fetchAdd(1, .monotonic);
        }
        fn parent(_: ?*anyopaque) callconv(.c) void {
            _ = ran.fetchAdd(1, .monotonic);
            _ = sched.spawn(child, null) catch |err| {
                failed = err;
            };
        }
        fn between() void {
            if (!armed.swap(false, .monotonic)) return;
            _ = sched.spawn(parent, null) catch |err| {
                failed = err;
                return;
            };
            // Until both are counted out (a worker counts a coroutine's `finished`, then its
            // `busy_out`, which the drain waits for).
            sched.drainFor(test_timeout) catch |err| {
                failed = err;
            };
        }
    };
    S.ran.store(0, .monotonic);
    S.failed = null;
    var s: Scheduler = undefined;
    try startForTest(&s, 2);
    defer s.shutdown(.cancel);
    S.sched = &s;
    test_hooks.between_count_reads = S.between;
    defer test_hooks.between_count_reads = null;
    for (0..2) |round| {
        S.armed.store(true, .monotonic);
        const live = s.liveCount();
        S.armed.store(true, .monotonic);
        const busy = s.busyCount();
        if (S.failed) |err| return err;
        try testing.expectEqual(@as(u32, @intCast(4 * (round + 1))), S.ran.load(.monotonic));
        try testing.expectEqual(@as(u64, 2), live);
        try testing.expectEqual(@as(u64, 2), busy);
        // Read through, none live or busy.
        try testing.expectEqual(@as(u64, 0), s.liveCount());
        try testing.expectEqual(@as(u64, 0), s.busyCount());
    }
}

test "a failed begin waits for a drain and for a reader of the statistics on other threads that saw its run going before it frees the workers" {
    // The drain (`drainUntil`, counted in `drainers`) and the reader (`workerStats`, counted in
    // `readers`) each held where they read the workers' array next, the begin failing
    // meanwhile (`begin_failing`): its errdefer must wait for them (asleep in `awaitNone`:
    // `quiesce_waiters`) before it frees the array. Without either wait the begin returned
    // with the party still held, which then read the freed array (the reader) or found the
    // run gone only by luck (the drain).
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    const S = struct {
        var sched: *Scheduler = undefined;
        var gate: Gate = .{};
        var reader_case = false;
        var begun = std.atomic.Value(bool).init(false);
        var waited = std.atomic.Value(bool).init(false);
        var got = std.atomic.Value(u32).init(0); // 1: the drain's error.Shutdown, or the reader's stats
        var joiners: [2]test_wait.Joiner = .{ .{}, .{} };
        var threads: [2]?std.Thread = .{ null, null };
        fn hold() void {
            test_hooks.drain_counted = null; // once
            test_hooks.stats_reading = null;
            gate.hold();
        }
        fn party() void {
            defer joiners[0].done();
            if (reader_case) {
                if (sched.workerStats(0) != null) got.store(1, .release);
            } else if (sched.drainFor(test_timeout)) |_| {} else |err| {
                if (err == error.Shutdown) got.store(1, .release);
            }
        }
        // Until the failing begin waits for the party (or returned), then lets the party go.
        fn watcher() void {
            defer joiners[1].done();
            defer gate.letGo();
            const d = test_wait.Deadline.in(test_wait.default_ns, "");
            while (!d.passed()) {
                if (begun.load(.acquire)) return; // returned under the party: no wait
                if (sched.quiesce_waiters.load(.monotonic) != 0) break;
                std.Thread.yield() catch {};
            }
            waited.store(!begun.load(.acquire), .release); // pairs with the test's acquire load
        }
        // On the starting thread, the run going, before its thread fails.
        fn failing() void {
            threads[0] = std.Thread.spawn(.{}, party, .{}) catch return;
            gate.awaitInside("the drain or the reader to hold the workers") catch return;
            threads[1] = std.Thread.spawn(.{}, watcher, .{}) catch return;
        }
    };
    defer test_hooks.fail_thread = null;
    defer test_hooks.begin_failing = null;
    defer test_hooks.drain_counted = null;
    defer test_hooks.stats_reading = null;
    for ([_]bool{ false, true }) |reader_case| {
        S.gate = .{};
        S.reader_case = reader_case;
        S.begun.store(false, .monotonic);
        S.waited.store(false, .monotonic);
        S.got.store(0, .monotonic);
        S.joiners = .{ .{}, .{} };
        S.threads = .{ null, null };
        var s: Scheduler = undefined;
        S.sched = &s;
        if (reader_case) test_hooks.stats_reading = S.hold else test_hooks.drain_counted = S.hold;
        test_hooks.begin_failing = S.failing;
        test_hooks.fail_thread = 1; // worker 0 started
        const r = s.start(testing.allocator, .{ .workers = 2, .stack_size = test_stack_size });
        S.begun.store(true, .release); // pairs with the watcher's acquire loads
        test_hooks.fail_thread = null;
        test_hooks.begin_failing = null;
        S.gate.letGo();
        for (S.threads, 0..) |th, i| if (th) |t| S.joiners[i].join(t, test_wait.default_ns, "a test thread");
        try testing.expectError(error.OutOfMemory, r);
        try testing.expect(S.threads[0] != null and S.threads[1] != null);
        try testing.expect(S.waited.load(.acquire));
        try testing.expectEqual(@as(u32, 1), S.got.load(.acquire));
        try testing.expectEqual(@as(usize, 0), s.workerCount());
        try testing.expectEqual(@as(u32, 0), s.drainers.load(.monotonic));
        try testing.expectEqual(@as(u32, 0), s.readers.load(.monotonic));
    }
}

test "two threads that each shut down and restart the scheduler in a loop: a restart that finds the other's run going is refused with error.Running" {
    // Zig callers may do this (the C ABI's kc_sched_start refuses under its own lock: KC_EBUSY).
    // Before, `restart` asserted that no run was going: the second of two restarts with no
    // shutdown between them tripped it (a Debug build panicked; a release build rebuilt the
    // scheduler under the running workers). Each round forces that interleaving: both threads
    // shut down, then one (each in turn) restarts and is held in its restart (`restarted`: the
    // new run going, `lifecycle` held) until the other's restart waits for the lock (asleep;
    // or only begun, where /proc cannot tell), which is then refused. Before, the test looped
    // until both threads happened to be refused once, a deadline away: a flake risk on a
    // loaded host.
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    const rounds = 8;
    const S = struct {
        var sched: *Scheduler = undefined;
        /// Threads at the rounds' meeting points so far (`meet`).
        var met = std.atomic.Value(u32).init(0);
        /// The round (from 1) whose winner is held in its restart; whose loser is in its own.
        var held = std.atomic.Value(u32).init(0);
        var trying = std.atomic.Value(u32).init(0);
        var loser_tid = std.atomic.Value(std.Thread.Id).init(0);
        /// Per thread and round: 1 restarted, 2 refused with error.Running, 3 anything else.
        var outcome: [2][rounds]std.atomic.Value(u8) = @splat(@splat(.init(0)));
        var joiners: [2]test_wait.Joiner = .{ .{}, .{} };
        var round: u32 = 0; // the winner's, read by its own hook

        /// Until both threads arrived at meeting `n` (from 1).
        fn meet(n: u32) error{Timeout}!void {
            // Acq_rel / acquire: what each did before it arrived happens before the other
            // leaves (the shutdowns before the restarts, the restarts before the next round).
            _ = met.fetchAdd(1, .acq_rel);
            const d = test_wait.Deadline.in(test_wait.default_ns, "the other restarting thread");
            while (met.load(.acquire) < 2 * n) try d.wait();
        }

        /// The winner's `restarted`: until the loser waits for `lifecycle`, held by us.
        fn hold() void {
            held.store(round, .release); // pairs with the loser's acquire load
            const d = test_wait.Deadline.in(test_wait.default_ns, "");
            // Acquire: pairs with the loser's release stores (its id, then `trying`).
            while (trying.load(.acquire) != round and !d.passed()) std.Thread.yield() catch {};
            while (!d.passed()) {
                const st = test_wait.threadState(loser_tid.load(.acquire)) orelse break;
                if (st == 'S') break;
                std.Thread.yield() catch {};
            }
        }

        fn cycler(i: usize) void {
            defer joiners[i].done();
            for (0..rounds) |r| {
                const n: u32 = @intCast(r + 1);
                sched.shutdown(.cancel);
                meet(2 * n - 1) catch return; // both shut down: the run stopped
                const won = r % 2 == i;
                if (won) {
                    round = n;
                } else {
                    const d = test_wait.Deadline.in(test_wait.default_ns, "the other restart to be held");
                    while (held.load(.acquire) != n) d.wait() catch return;
                    loser_tid.store(std.Thread.getCurrentId(), .release);
                    trying.store(n, .release);
                }
                const got: u8 = if (sched.restart(testing.allocator, .{ .workers = 1, .stack_size = test_stack_size }))
                    1
                else |err| if (err == error.Running) 2 else 3;
                outcome[i][r].store(got, .monotonic); // the join orders it before the test's read
                meet(2 * n) catch return; // both returned: the next round's shutdowns come after
            }
        }
    };
    S.met.store(0, .monotonic);
    S.held.store(0, .monotonic);
    S.trying.store(0, .monotonic);
    S.loser_tid.store(0, .monotonic);
    for (&S.outcome) |*o| for (o) |*x| x.store(0, .monotonic);
    S.joiners = .{ .{}, .{} };
    S.round = 0;
    var s: Scheduler = undefined;
    try startForTest(&s, 1);
    S.sched = &s;
    test_hooks.restarted = S.hold;
    defer test_hooks.restarted = null;
    var threads: [2]?std.Thread = .{ null, null };
    defer {
        for (threads, 0..) |th, i| if (th) |t| S.joiners[i].join(t, test_wait.test_ns, "a restarting thread");
        s.shutdown(.cancel);
    }
    for (&threads, 0..) |*t, i| t.* = try std.Thread.spawn(.{}, S.cycler, .{i});
    for (&threads, 0..) |*t, i| {
        S.joiners[i].join(t.*.?, test_wait.test_ns, "a restarting thread");
        t.* = null;
    }
    for (0..rounds) |r| {
        const w = r % 2;
        try testing.expectEqual(@as(u8, 1), S.outcome[w][r].load(.monotonic));
        try testing.expectEqual(@as(u8, 2), S.outcome[1 - w][r].load(.monotonic));
    }
    try testing.expect(s.isRunning()); // the last round's winner's run
}

test "a restart while a bounded shutdown's join is left pending is refused with error.Shutdown; after the next shutdown it runs" {
    // Before, `restart` asserted that no join was pending: a restart on another thread than
    // the bounded shutdown's that timed out (its worker on a coroutine that never yields)
    // tripped it.
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    test_wait.NeverYields.reset();
    var s: Scheduler = undefined;
    try startForTest(&s, 1);
    var stuck = true;
    defer if (stuck) {
        test_wait.NeverYields.letGo();
        s.shutdown(.cancel);
    };
    _ = try s.spawn(test_wait.NeverYields.body, null);
    try test_wait.NeverYields.awaitRunning();
    try testing.expectError(error.Timeout, s.shutdownWithin(.cancel, 20 * std.time.ns_per_ms));
    try testing.expect(s.join_pending.load(.monotonic));
    try testing.expectError(error.Shutdown, s.restart(testing.allocator, .{ .workers = 1, .stack_size = test_stack_size }));
    try testing.expect(s.join_pending.load(.monotonic)); // nothing done
    try testing.expect(!s.isRunning());
    test_wait.NeverYields.letGo();
    s.shutdown(.cancel); // the join
    stuck = false;
    try testing.expect(!s.join_pending.load(.monotonic));
    try s.restart(testing.allocator, .{ .workers = 1, .stack_size = test_stack_size });
    defer s.shutdown(.cancel);
    try testing.expect(s.isRunning());
}

test "a bounded shutdown overlapping a restart waits for it past its deadline, then stops the new run; its join waits no longer (joined, or left to the next shutdown and a restart refused meanwhile)" {
    // A restart holds `lifecycle` while it starts the new run; a bounded shutdown that comes
    // meanwhile waits for it (a restart, as a spawn from outside, holds it briefly: only a
    // shutdown holding it times the wait out) and then shuts the new run down, its deadline
    // past by then. Its join waits until that deadline, no longer: error.Timeout with the join
    // left to the next shutdown (`join_pending`), unless every worker had already left at its
    // look (then joined and freed, as usual). Either way the run is stopped, a restart then is
    // refused while the join is pending (error.Shutdown; before, an assertion) and runs once
    // the next shutdown joined.
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    const S = struct {
        var sched: *Scheduler = undefined;
        var gate: Gate = .{};
        var past = std.atomic.Value(bool).init(false);
        var join_past = std.atomic.Value(u32).init(0); // 1: the join's deadline was past, 2: not
        var result = std.atomic.Value(u32).init(0); // 1: returned, 2: error.Timeout
        var joiner: test_wait.Joiner = .{};
        // On the restart's thread, the new run going, holding the lock: until the test lets go.
        fn hold() void {
            test_hooks.restarted = null; // once
            gate.hold();
        }
        fn lockWait(d: u64) void {
            // Release: pairs with the test's acquire load (a flag only).
            if (monotonicNs() >= d) past.store(true, .release);
        }
        fn joinBy(d: u64) void {
            // Release: pairs with the test's acquire load, after the join of this thread.
            join_past.store(if (monotonicNs() >= d) 1 else 2, .release);
        }
        fn shutter() void {
            defer joiner.done();
            const r: u32 = if (sched.shutdownWithin(.cancel, std.time.ns_per_ms)) 1 else |_| 2;
            result.store(r, .release); // pairs with the test's acquire load
        }
    };
    S.gate = .{};
    S.past.store(false, .monotonic);
    S.join_past.store(0, .monotonic);
    S.result.store(0, .monotonic);
    S.joiner = .{};
    var s: Scheduler = undefined;
    try startForTest(&s, 1);
    S.sched = &s;
    s.shutdown(.cancel);
    test_hooks.restarted = S.hold;
    defer test_hooks.restarted = null;
    test_hooks.lock_wait = S.lockWait;
    defer test_hooks.lock_wait = null;
    test_hooks.join_by = S.joinBy;
    defer test_hooks.join_by = null;
    var restarter: Restarter = .{ .sched = &s };
    var shutter: ?std.Thread = null;
    defer {
        S.gate.letGo();
        restarter.join();
        if (shutter) |t| S.joiner.join(t, test_wait.default_ns, "the bounded shutdown");
        if (s.isRunning() or s.join_pending.load(.monotonic)) s.shutdown(.cancel);
    }
    try restarter.begin();
    try S.gate.awaitInside("the restart to start the new run");
    shutter = try std.Thread.spawn(.{}, S.shutter, .{});
    const p = test_wait.Deadline.in(test_wait.default_ns, "the shutdown's lock wait to pass its deadline");
    while (!S.past.load(.acquire)) try p.wait();
    try testing.expectEqual(@as(u32, 0), S.result.load(.acquire)); // waits for the restart
    try testing.expect(s.isRunning()); // the new run, not stopped under the restart
    S.gate.letGo();
    restarter.join();
    S.joiner.join(shutter.?, test_wait.default_ns, "the bounded shutdown");
    shutter = null;
    try testing.expectEqual(@as(u32, 1), restarter.result.load(.acquire));
    try testing.expect(!s.isRunning());
    try testing.expectEqual(@as(u32, 1), S.join_past.load(.acquire)); // no time of its own
    const opts: Options = .{ .workers = 1, .stack_size = test_stack_size };
    if (S.result.load(.acquire) == 2) {
        try testing.expect(s.join_pending.load(.monotonic));
        try testing.expectError(error.Shutdown, s.restart(testing.allocator, opts));
        s.shutdown(.cancel); // the join
    } else try testing.expectEqual(@as(u32, 1), S.result.load(.acquire));
    try testing.expect(!s.join_pending.load(.monotonic));
    try testing.expectEqual(@as(usize, 0), s.workerCount());
    try s.restart(testing.allocator, opts);
    try testing.expect(s.isRunning());
}

test "a spawn from outside the workers, nobody waiting for the lifecycle lock, leaves its futex word alone" {
    // Before, every unlock of `lifecycle` bumped `lifecycle_events` with a seq_cst
    // read-modify-write, a spawn from outside's too (`zig build bench`, "spawn from a thread
    // outside the workers": ~+35 ns min, ~+100 ns median). Only a counted waiter asks for it.
    var s: Scheduler = undefined;
    try startForTest(&s, 1);
    defer s.shutdown(.cancel);
    const S = struct {
        fn nop(_: ?*anyopaque) callconv(.c) void {}
    };
    const before = s.lifecycle_events.load(.monotonic);
    for (0..4) |_| _ = try s.spawn(S.nop, null);
    try testing.expectEqual(before, s.lifecycle_events.load(.monotonic));
    try testing.expectEqual(@as(u32, 0), s.lifecycle_waiters.load(.monotonic));
}

test "a bounded shutdown waiting for the lifecycle lock that another shutdown holds for good gives up at its deadline" {
    // The other shutdown joins a worker that never yields, holding the lock. Before the bounded
    // wait (`tryLock`), the call waited on the lock for as long (here: until the watchdog).
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    const S = struct {
        var sched: *Scheduler = undefined;
        var joiner: test_wait.Joiner = .{};
        fn shutter() void {
            defer joiner.done();
            sched.shutdown(.cancel);
        }
        var rounds = std.atomic.Value(u32).init(0);
        fn round(_: u64) void {
            _ = rounds.fetchAdd(1, .monotonic); // a count
        }
    };
    S.joiner = .{};
    S.rounds.store(0, .monotonic);
    test_wait.NeverYields.reset();
    var s: Scheduler = undefined;
    try startForTest(&s, 1);
    S.sched = &s;
    _ = try s.spawn(test_wait.NeverYields.body, null);
    try test_wait.NeverYields.awaitRunning();
    const t = try std.Thread.spawn(.{}, S.shutter, .{});
    var let_go = false;
    defer if (!let_go) {
        test_wait.NeverYields.letGo();
        S.joiner.join(t, test_wait.default_ns, "the unbounded shutdown");
    };
    // It holds the lock once it stopped the run (under the lock), and keeps it while it joins.
    const d = test_wait.Deadline.in(test_wait.default_ns, "the other shutdown to hold the lock");
    while (!s.lifecycle_shutdown.load(.monotonic) or s.isRunning()) try d.wait();
    const bound = 300 * std.time.ns_per_ms;
    test_hooks.lock_wait = S.round;
    defer test_hooks.lock_wait = null;
    const t0 = monotonicNs();
    try testing.expectError(error.Timeout, s.shutdownWithin(.cancel, bound));
    try testing.expect(monotonicNs() - t0 >= bound);
    // A few yields (8), then a sleep until the deadline. Before, it yielded for the whole
    // bound: thousands of rounds on an idle machine, tens on a loaded one, a core kept busy.
    try testing.expect(S.rounds.load(.monotonic) <= 16);
    try testing.expect(!s.isRunning());
    test_wait.NeverYields.letGo();
    let_go = true;
    S.joiner.join(t, test_wait.default_ns, "the unbounded shutdown");
    try testing.expect(!s.join_pending.load(.monotonic));
    try testing.expectEqual(@as(usize, 0), s.workers.len);
}

test "a bounded shutdown past its deadline that took the holder of the lifecycle lock for a spawn gives up once that holder says it is a shutdown" {
    // The waiter read `lifecycle_shutdown` false while the other shutdown held the lock but had
    // not yet said so, and went to sleep until an unlock, as it does for a spawn. That shutdown
    // then joins a worker that never yields, holding the lock for good. Before 1517088 nothing
    // woke the waiter as the hint turned true (only unlocks bump the word): it slept, past its
    // deadline, for as long as the other shutdown held the lock.
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    const S = struct {
        var sched: *Scheduler = undefined;
        var inside = std.atomic.Value(bool).init(false);
        var once = std.atomic.Value(bool).init(false);
        var result = std.atomic.Value(u32).init(0); // 1: returned, 2: error.Timeout
        var joiners: [2]test_wait.Joiner = .{ .{}, .{} };
        fn shutter() void {
            defer joiners[0].done();
            sched.shutdown(.cancel);
        }
        fn bounded() void {
            defer joiners[1].done();
            const r: u32 = if (sched.shutdownWithin(.cancel, 0)) 1 else |_| 2;
            result.store(r, .release); // pairs with the test's acquire loads
        }
        // The unbounded shutdown, holding the lock, before it says so: it waits here until the
        // bounded one sleeps (as for a spawn's unlock), then goes on.
        fn locked() void {
            if (once.swap(true, .monotonic)) return; // the first holder only
            inside.store(true, .release); // pairs with the test's acquire load
            const d = test_wait.Deadline.in(test_wait.default_ns, "");
            while (sched.lifecycle_waiters.load(.seq_cst) == 0 and !d.passed()) std.Thread.yield() catch {};
        }
    };
    S.inside.store(false, .monotonic);
    S.once.store(false, .monotonic);
    S.result.store(0, .monotonic);
    S.joiners = .{ .{}, .{} };
    test_wait.NeverYields.reset();
    var s: Scheduler = undefined;
    try startForTest(&s, 1);
    S.sched = &s;
    _ = try s.spawn(test_wait.NeverYields.body, null);
    try test_wait.NeverYields.awaitRunning();
    test_hooks.lifecycle_locked = S.locked;
    defer test_hooks.lifecycle_locked = null;
    const t0 = try std.Thread.spawn(.{}, S.shutter, .{});
    var started: u32 = 1;
    defer if (started > 0) {
        test_wait.NeverYields.letGo();
        S.joiners[0].join(t0, test_wait.default_ns, "the unbounded shutdown");
    };
    const d = test_wait.Deadline.in(test_wait.default_ns, "the unbounded shutdown to hold the lock");
    while (!S.inside.load(.acquire)) try d.wait();
    const t1 = try std.Thread.spawn(.{}, S.bounded, .{});
    // It gives up while the other shutdown still holds the lock (its worker never yields).
    const gave_up = test_wait.Deadline.in(test_wait.default_ns, "the bounded shutdown to give up");
    const gone = while (!gave_up.passed()) {
        if (S.result.load(.acquire) != 0) break true;
        std.Thread.yield() catch {};
    } else false;
    test_wait.NeverYields.letGo();
    S.joiners[0].join(t0, test_wait.default_ns, "the unbounded shutdown");
    started = 0;
    S.joiners[1].join(t1, test_wait.default_ns, "the bounded shutdown");
    try testing.expect(gone);
    try testing.expectEqual(@as(u32, 2), S.result.load(.acquire));
    try testing.expect(!s.join_pending.load(.monotonic));
    try testing.expectEqual(@as(usize, 0), s.workers.len);
}

/// Workers for a "stress (many workers)" test: one per CPU, at least 4 (oversubscribed on a
/// 2-CPU machine, where preemption still interleaves them anywhere), at most 16 (the cores of
/// the machine that runs `kcoro-test` for real parallelism).
pub fn stressWorkers() u32 {
    const cpus = std.Thread.getCpuCount() catch 4;
    return @intCast(@min(16, @max(4, cpus)));
}

test "scheduler: stress (many workers): spawn trees, timed parks racing unparks from coroutines and threads, sleeps, steals, drains" {
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.stress_ns);
    defer wd.stop();
    // Per round, until its deadline: trees of coroutines spawned by coroutines (and some from
    // this thread) with uneven work, so that idle workers steal; pairs where one side parks
    // with a timer (short: the timer races the partner's unpark; long: a lost wake-up holds
    // the drain past its bound) and the other, a coroutine or a plain thread, posts and
    // unparks it; sleepers. Then a drain, which must find all of it done.
    const seeds = [_]u64{ 0x5c4ed, 0xfeed_f00d, 0x1234_5678_9abc };
    const round_ns = 40 * std.time.ns_per_ms;
    const per_seed_ns = 350 * std.time.ns_per_ms;
    const max_nodes = 1 << 18;
    const n_pairs = 6; // the last `thread_pairs` posted to from plain threads
    const thread_pairs = 2;
    const done_bit: u32 = 1 << 31;
    const Pair = struct {
        posted: std.atomic.Value(u32) = .init(0),
        waiter: Ref = undefined,
        finished: bool = false,
    };
    const S = struct {
        var sched: *Scheduler = undefined;
        var seed: u64 = 0;
        var stop_ns: u64 = 0;
        var ran: []std.atomic.Value(u8) = &.{};
        var next_id: std.atomic.Value(u32) = .init(0);
        var spawned: std.atomic.Value(u32) = .init(0);
        var pairs: [n_pairs]Pair = undefined;
        var failures: std.atomic.Value(u32) = .init(0);
        var failure: [160]u8 = undefined;
        var failure_len: usize = 0;

        fn fail(comptime fmt: []const u8, args: anytype) void {
            if (failures.fetchAdd(1, .acq_rel) != 0) return;
            failure_len = (std.fmt.bufPrint(&failure, fmt, args) catch failure[0..]).len;
        }

        fn prng(salt: u64) std.Random.DefaultPrng {
            return .init(seed ^ (salt *% 0x9E3779B97F4A7C15));
        }

        fn live() bool {
            return monotonicNs() < stop_ns;
        }

        /// A new tree node of `depth` (its ID and depth in the argument), counted spawned.
        fn spawnNode(depth: usize) void {
            const id = next_id.fetchAdd(1, .monotonic);
            if (id >= max_nodes) return;
            _ = sched.spawn(node, @ptrFromInt(@as(usize, id) << 8 | depth)) catch |err| {
                return fail("spawn: {s}", .{@errorName(err)});
            };
            _ = spawned.fetchAdd(1, .monotonic);
        }

        fn node(arg: ?*anyopaque) callconv(.c) void {
            const word = @intFromPtr(arg);
            const id = word >> 8;
            const depth = word & 0xff;
            if (ran[id].fetchAdd(1, .monotonic) != 0) fail("node {d} ran twice", .{id});
            var p = prng(id);
            const r = p.random();
            if (depth > 0 and live()) {
                for (0..r.uintLessThan(usize, 7)) |_| spawnNode(depth - 1);
            }
            // Uneven: from nothing to ~100 us, sometimes split by a yield.
            var x: u64 = id;
            for (0..r.uintLessThan(usize, 40_000)) |i| x = x *% 6364136223846793005 +% i;
            std.mem.doNotOptimizeAway(x);
            if (r.boolean()) coroutine.yield() catch unreachable;
        }

        fn forester(_: ?*anyopaque) callconv(.c) void {
            var p = prng(0xf0);
            const r = p.random();
            while (live()) {
                spawnNode(4);
                sched.sleep(r.uintLessThan(u64, 200 * std.time.ns_per_us)) catch |err| fail("sleep: {s}", .{@errorName(err)});
            }
        }

        fn sleeper(arg: ?*anyopaque) callconv(.c) void {
            var p = prng(0x51 + @intFromPtr(arg));
            const r = p.random();
            while (live()) {
                const ns = r.uintLessThan(u64, 300 * std.time.ns_per_us);
                const t0 = monotonicNs();
                sched.sleep(ns) catch |err| fail("sleep: {s}", .{@errorName(err)});
                if (monotonicNs() - t0 < ns) fail("a sleep of {d} ns returned after {d}", .{ ns, monotonicNs() - t0 });
            }
        }

        /// Parks with a timer until its partner's last post: every post seen, every timeout
        /// on time.
        fn waiter(arg: ?*anyopaque) callconv(.c) void {
            const k = @intFromPtr(arg);
            const pair = &pairs[k];
            var p = prng(0x3a17 + k);
            const r = p.random();
            var seen: u32 = 0;
            while (true) {
                const cur = pair.posted.load(.acquire);
                if (cur & ~done_bit != seen) {
                    seen = cur & ~done_bit;
                    continue;
                }
                if (cur & done_bit != 0) break;
                const deadline = if (r.boolean())
                    monotonicNs() + 10 * std.time.ns_per_s // only a lost wake-up waits this out
                else
                    monotonicNs() + r.uintLessThan(u64, 50 * std.time.ns_per_us);
                const timed_out = sched.parkUntil(deadline) catch |err| return fail("parkUntil: {s}", .{@errorName(err)});
                if (timed_out and monotonicNs() < deadline) fail("a park timed out {d} ns early", .{deadline - monotonicNs()});
            }
            pair.finished = true;
        }

        fn post(pair: *Pair, r: std.Random, count: *u32) void {
            count.* += 1;
            pair.posted.store(count.*, .release);
            if (r.uintLessThan(u8, 4) != 0) _ = sched.unpark(pair.waiter);
        }

        fn finish(pair: *Pair, count: u32) void {
            pair.posted.store(count | done_bit, .release);
            _ = sched.unpark(pair.waiter);
        }

        /// Posts (unparking the waiter for most posts: the others leave it to its timer).
        fn poster(arg: ?*anyopaque) callconv(.c) void {
            const k = @intFromPtr(arg);
            var p = prng(0x9057 + k);
            const r = p.random();
            var count: u32 = 0;
            while (live()) {
                post(&pairs[k], r, &count);
                switch (r.uintLessThan(u8, 3)) {
                    0 => coroutine.yield() catch unreachable,
                    1 => sched.sleep(r.uintLessThan(u64, 30 * std.time.ns_per_us)) catch |err| fail("sleep: {s}", .{@errorName(err)}),
                    else => {},
                }
            }
            finish(&pairs[k], count);
        }

        fn threadPoster(k: usize) void {
            var p = prng(0x7e + k);
            const r = p.random();
            var count: u32 = 0;
            while (live()) {
                post(&pairs[k], r, &count);
                if (r.boolean()) std.Thread.yield() catch {};
            }
            finish(&pairs[k], count);
        }
    };
    const report = struct {
        fn f(round: usize, comptime fmt: []const u8, args: anytype) error{StressFailed} {
            std.debug.print("scheduler stress (many workers), seed 0x{x}, round {d}: " ++ fmt ++ "\n", .{ S.seed, round } ++ args);
            return error.StressFailed;
        }
    }.f;
    S.ran = try testing.allocator.alloc(std.atomic.Value(u8), max_nodes);
    defer testing.allocator.free(S.ran);
    for (seeds) |seed| {
        S.seed = seed;
        var s: Scheduler = undefined;
        try s.start(testing.allocator, .{ .workers = stressWorkers(), .stack_size = test_stack_size });
        defer s.shutdown(.cancel);
        S.sched = &s;
        const until = monotonicNs() + per_seed_ns;
        var round: usize = 0;
        while (monotonicNs() < until) : (round += 1) {
            S.seed = seed ^ (@as(u64, round) << 48);
            @memset(std.mem.sliceAsBytes(S.ran), 0);
            S.next_id.store(0, .monotonic);
            S.spawned.store(0, .monotonic);
            S.stop_ns = monotonicNs() + round_ns;
            for (&S.pairs, 0..) |*pair, k| {
                pair.* = .{};
                pair.waiter = try s.spawn(S.waiter, @ptrFromInt(k));
            }
            for (0..n_pairs - thread_pairs) |k| _ = try s.spawn(S.poster, @ptrFromInt(k));
            var threads: [thread_pairs]std.Thread = undefined;
            for (&threads, n_pairs - thread_pairs..) |*t, k| t.* = try std.Thread.spawn(.{}, S.threadPoster, .{k});
            _ = try s.spawn(S.forester, null);
            for (0..2) |k| _ = try s.spawn(S.sleeper, @ptrFromInt(k));
            // Trees from outside too (the inject queue), while the others spawn inside.
            while (S.live()) {
                S.spawnNode(2);
                std.Thread.yield() catch {};
            }
            for (threads) |t| t.join();
            s.drainFor(5 * std.time.ns_per_s) catch |err| return report(round, "drain: {s} ({d} live)", .{ @errorName(err), s.liveCount() });
            if (S.failures.load(.acquire) > 0) return report(round, "{d} violations, the first: {s}", .{ S.failures.load(.monotonic), S.failure[0..S.failure_len] });
            if (s.liveCount() != 0) return report(round, "{d} coroutines live after the drain", .{s.liveCount()});
            if (s.busyCount() != 0) return report(round, "busy count {d} after the drain", .{s.busyCount()});
            for (&S.pairs, 0..) |*pair, k| if (!pair.finished) return report(round, "waiter {d} never saw its last post", .{k});
            const n = @min(S.next_id.load(.monotonic), max_nodes);
            if (S.spawned.load(.monotonic) != n) return report(round, "{d} of {d} nodes spawned", .{ S.spawned.load(.monotonic), n });
            for (S.ran[0..n], 0..) |*x, id| if (x.load(.monotonic) != 1) return report(round, "node {d} ran {d} times", .{ id, x.load(.monotonic) });
        }
    }
}

test "shutdown from one of the scheduler's own coroutines panics with a message that names the misuse, in every mode" {
    // It would join the thread running it: std.Thread's join of itself was "reached unreachable
    // code" in safe builds and undefined behaviour in ReleaseFast (the C ABI already refused it
    // with KC_EINVAL). A panic, so in a child process; its stderr comes back through a pipe.
    if (!forkedThreadsOk()) return error.SkipZigTest;
    const fds = try std.posix.pipe();
    const pid = try std.posix.fork();
    if (pid == 0) {
        std.posix.close(fds[0]);
        std.posix.dup2(fds[1], 2) catch std.posix.exit(2);
        const S = struct {
            var sched: Scheduler = undefined;
            fn stopper(_: ?*anyopaque) callconv(.c) void {
                sched.shutdown(.cancel); // panics
                std.posix.exit(3);
            }
        };
        S.sched.start(std.heap.page_allocator, .{ .workers = 1, .stack_size = test_stack_size }) catch std.posix.exit(2);
        _ = S.sched.spawn(S.stopper, null) catch std.posix.exit(2);
        S.sched.drainFor(test_timeout) catch {};
        std.posix.exit(4); // the coroutine returned, or the drain timed out
    }
    std.posix.close(fds[1]);
    defer std.posix.close(fds[0]);
    // What the child wrote, until it ends (its end closes the pipe), then its end: one bound
    // for both, past which it is killed (one that never writes nor ends included).
    var buf: [4096]u8 = undefined;
    const text, const res = try test_wait.childOutput(pid, fds[0], &buf, test_wait.test_ns, "the forked child");
    const len = text.len;
    if (std.mem.indexOf(u8, text, "Cannot shut down a scheduler from one of its own coroutines") == null) {
        std.debug.print("the child wrote: {s}\n", .{text[0..@min(len, 600)]});
        return error.TestUnexpectedResult;
    }
    try testing.expect(std.mem.indexOf(u8, text, "received shutdown(.cancel) on worker 0") != null);
    try testing.expect(std.posix.W.IFSIGNALED(res.status)); // a panic aborts
}

//! A stackful coroutine: an entry function running on a private stack, resumed by whoever
//! calls `resume` and suspended by its own `yield` or `park`. Asymmetric: a coroutine always
//! switches back to the thread of control that resumed it. Coroutines may resume other
//! coroutines (nesting); `current()` is per thread.
//!
//! The object lives at the top of its own stack, so creating a coroutine allocates nothing
//! beyond the pooled stack. Size: see `@sizeOf(Coroutine)` (under 512 bytes).
//!
//! States and the only legal transitions (each asserted where it happens):
//!
//!     created   -> running    resume
//!     ready     -> running    resume
//!     suspended -> running    resume
//!     running   -> suspended  yield (recorded by the resumer once the switch is complete)
//!     running   -> parked     park  (recorded by the resumer once the switch is complete)
//!     parked    -> ready      unpark (any thread), or a permit that arrived during the switch
//!     parked    -> running    a scheduler's unpark (`unparkGenQueued`): runnable, waiting only
//!                             for its turn, as a yielded coroutine does (`resumeYielded`)
//!     running   -> finished   the entry function returned
//!
//! Park/unpark follow the permit model (Go's and Rust's `park`): `unpark` grants a single
//! permit; `park` consumes it and returns at once if it is there, so an unpark that arrives
//! before the park is never lost, and several unparks before one park coalesce into one.
//! A coroutine counts as parked only after it has switched off its stack, so a thread that
//! unparks it and then resumes it can never run it on two stacks' worth of state at once.
//!
//! State, permit and a generation live in one atomic word, changed only by CAS. The generation
//! is bumped every time a stack is reused for a new coroutine, so an `unpark` that carries the
//! generation it was given (a `Ref`) and arrives after the coroutine finished and its stack was
//! reused fails harmlessly instead of waking a stranger. Pooled stacks stay mapped while their
//! pool lives, which is what makes touching a finished coroutine's word safe.
//!
//! A coroutine may be abandoned where it stands, never to run again (a scheduler's shutdown that
//! cancels, `destroy` of a hand-driven one): whatever a wait registered outside its stack (a
//! waiter in a channel's queue, a link on a token, a reference) must then be undone by others.
//! Each such wait pushes a `Cleanup` for the time it may park; `runCleanups` runs them.
//!
//! Below the object lies the coroutine's side room (`sideRoom`): memory that outlives any one
//! call but not the coroutine (a select keeps its waiters there between selects, see
//! chan/channel.zig). Whoever fills it sets `finish`, which runs once when the coroutine
//! finishes or is abandoned, to undo what the room still holds registered elsewhere.
//!
//! FP control state (MXCSR and x87 CW on x86_64, FPCR on AArch64) is saved across switches only
//! for coroutines created with `fp_control = true`. A coroutine created without it shares the
//! FP control state of whoever resumes it: it must restore any rounding-mode or exception-mask
//! change it makes before it yields, parks or returns.
const std = @import("std");
const test_wait = @import("../test_wait.zig");
const assert = std.debug.assert;
const sw = @import("switch.zig");
const stack_mod = @import("stack.zig");
const ctx_mod = @import("../sc/context.zig");
const tsan = @import("tsan.zig");

pub const Stack = stack_mod.Stack;

pub const State = enum(u8) {
    created = 0,
    ready = 1,
    running = 2,
    suspended = 3,
    parked = 4,
    finished = 5,
};

pub const EntryFn = *const fn (arg: ?*anyopaque) callconv(.c) void;

pub const Options = struct {
    /// Save and restore FP control state on every switch (about 3 ns per switch on x86_64).
    fp_control: bool = false,
};

/// The coroutine's atomic word.
const Word = packed struct(u64) {
    state: State,
    permit: bool,
    _unused: u23 = 0,
    gen: u32,
};

/// A coroutine and the generation it had when the reference was taken: unparking through a
/// stale `Ref` (the coroutine finished, its stack was reused) is a harmless no-op. `epoch`: the
/// run of the scheduler the coroutine belonged to (`Coroutine.epoch`; 0 for a hand-driven one),
/// which a scheduler checks before it reads the coroutine: a `Ref` that outlived its run names
/// a stack that run's shutdown unmapped (sched/scheduler.zig, `wakeOutside`).
pub const Ref = struct {
    co: *Coroutine,
    gen: u32,
    epoch: u32,

    /// Unparks the coroutine if it is still the one this `Ref` was taken of (its generation):
    /// true if it was parked. A hand-driven coroutine's resumer must then resume it.
    pub fn unpark(r: Ref) bool {
        return r.co.unparkGen(r.gen);
    }

    /// `unpark`, telling a stale `Ref` apart (`Unparked`).
    pub fn unparkChecked(r: Ref) Unparked {
        return r.co.unparkTo(r.gen, .ready);
    }
};

/// What an unpark of a generation did: moved the coroutine out of parked (`woken`), found it of
/// that generation but not parked (`not_parked`: a permit left, or it had finished), or found
/// a later coroutine on its stack (`stale`: nothing done, no permit left).
pub const Unparked = enum { woken, not_parked, stale };

/// An undo step for a coroutine abandoned mid-wait (`Coroutine.pushCleanup`): usually the first
/// field of a struct on the coroutine's stack that holds what to undo (`@fieldParentPtr`).
/// `run` may lock channels and tokens and drop references; it must not wake coroutines (their
/// scheduler is gone) or allocate, except a record of what it leaves for later (`later`).
pub const Cleanup = struct {
    run: *const fn (c: *Cleanup) void,
    next: ?*Cleanup = null,
};

/// Registers `c` on the calling coroutine; on a plain thread (never abandoned) it does nothing.
/// Pair with `popCleanup` (a `defer`).
pub fn pushCleanup(c: *Cleanup) void {
    if (getCurrent()) |co| co.pushCleanup(c);
}

/// Unregisters `c` from the calling coroutine (see `pushCleanup`).
pub fn popCleanup(c: *Cleanup) void {
    if (getCurrent()) |co| co.popCleanup(c);
}

/// A step a cleanup leaves for later (`later`): to run once the thread abandoning the coroutine
/// let go of its locks. Usually the first field of a heap record that frees itself in `run`.
pub const Later = struct {
    run: *const fn (l: *Later) void,
    next: ?*Later = null,
};

/// What the cleanups a thread runs leave for later, in the order they left it (`later`):
/// intrusive, so that queueing allocates nothing. Its collector runs it (`runAll`) once it let
/// go of its locks.
pub const LaterList = struct {
    head: ?*Later = null,
    tail: ?*Later = null,

    fn push(l: *LaterList, x: *Later) void {
        assert((l.head == null) == (l.tail == null));
        x.next = null;
        if (l.tail) |t| t.next = x else l.head = x;
        l.tail = x;
    }

    /// A collector's start (`Scheduler.shutdownBy`, the C ABI's `shutdownOf`): `later` queues
    /// to `l` on this thread from now on, unless the thread collects already (inside a
    /// shutdown's cleanups, whose collector then runs what is left). Returns whether it began,
    /// for `end`; `l` stays at its address until then.
    pub fn begin(l: *LaterList) bool {
        if (collectingLater()) return false;
        _ = collectLater(l);
        return true;
    }

    /// Ends what `begin` began (`began`, its answer; nothing if it did not): stops collecting
    /// and runs the list. Deferred before the caller's locks, so that it runs after they are
    /// let go (defers run in reverse).
    pub fn end(l: *LaterList, began: bool) void {
        if (!began) return;
        _ = collectLater(null);
        l.runAll();
    }

    /// `end` with a bound: by `deadline` (CLOCK_MONOTONIC ns; null: none, as `end`). What is
    /// left runs on a thread of its own (`LaterRunner`), waited for until the deadline only
    /// (at least `LaterRunner.slack_ns` from its start): a step takes a channel's lock with no
    /// bound (ending a channel, dropping a value to its undelivered path), and a thread may hold
    /// it for good (a stuck undelivered hook's caller holds its channel's). Past the deadline
    /// that thread runs on, ends once the lock is let go (a later collector may wait for that:
    /// `awaitLeftLater`), and detaches itself. Nothing is freed under it: each step owns what it
    /// touches, so only for steps that hold what they touch, as the C ABI's do (references to
    /// their channels); not `Channel.dropAbandoned`'s copies, which name their channel by
    /// pointer and need it to outlive the shutdown only (`Scheduler.shutdownBy` runs its own to
    /// their end). Before, a bounded shutdown (the C ABI's kc_sched_shutdown_timed) ran them
    /// here, waiting for that lock past its bound. Nothing left, or no memory or thread to be
    /// had: here, as `end`. False if it left that thread running past the deadline (the C
    /// ABI's KC_ETIME), true once every step is done.
    pub fn endBy(l: *LaterList, began: bool, deadline: ?u64) bool {
        if (!began) return true;
        _ = collectLater(null);
        const d = deadline orelse {
            l.runAll();
            return true;
        };
        if (l.head == null) return true;
        return LaterRunner.runBy(l, d);
    }

    /// Runs each, in order (each may free itself).
    pub fn runAll(l: *LaterList) void {
        while (l.head) |x| {
            l.head = x.next; // read first: `run` may free `x`
            x.run(x);
        }
        l.tail = null;
    }
};

/// A thread that runs a list of steps left for later for a bounded collector (`endBy`).
const LaterRunner = struct {
    list: LaterList,
    thread: std.Thread = undefined,
    /// `running`, then `done` (the runner, once the list ran) or `left` (the waiter, past its
    /// deadline), whichever comes first (a CAS each); also the futex word the waiter sleeps on.
    state: std.atomic.Value(u32) = .init(running),

    const running: u32 = 0;
    const done: u32 = 1;
    const left: u32 = 2;

    /// How long past its deadline the waiter waits for the runner at most (`runBy`).
    const slack_ns = 10 * std.time.ns_per_ms;

    /// Runners their waiters left past the deadline (`left`) that still run: a later collector
    /// waits for them (`awaitLeft`), so that the next shutdown returns with their steps done.
    /// Also the futex word it sleeps on. Raised by the waiter before its CAS to `left` (lowered
    /// again if that fails), lowered by such a runner as its last act (`countLeftOut`).
    var left_count = std.atomic.Value(u32).init(0);
    /// Set on a runner's thread: a step there (a hook, an on_done) that shuts a scheduler down
    /// does not wait for the runners left (`awaitLeft`), its own among them.
    threadlocal var on_runner: bool = false;

    /// Moves `l`'s steps to a runner and waits for it until `deadline`; joins it if it was done
    /// by then (true), else leaves it running (false). `l` is empty after.
    fn runBy(l: *LaterList, deadline: u64) bool {
        const r = std.heap.c_allocator.create(LaterRunner) catch {
            l.runAll();
            return true;
        };
        r.* = .{ .list = l.* };
        r.thread = std.Thread.spawn(.{}, main, .{r}) catch {
            std.heap.c_allocator.destroy(r);
            l.runAll(); // still `l`'s: nothing ran
            return true;
        };
        l.* = .{};
        // A start's slack: a collector that comes here at (or past) its deadline, its earlier
        // waits having used it, does not give up on steps that take microseconds.
        const until = @max(deadline, monotonicNs() +| slack_ns);
        while (true) {
            // Acquire: pairs with `main`'s acq_rel CAS to `done` (what the steps did is seen).
            if (r.state.load(.acquire) != running) break;
            const now = monotonicNs();
            if (now >= until) {
                // Counted left first, so that the runner, which counts itself out once it sees
                // `left` (ordered after this by the CAS below), never takes the count below 0.
                // Monotonic: a count; `awaitLeft` reads what the steps did through the
                // runner's release decrement.
                _ = left_count.fetchAdd(1, .monotonic);
                if (@import("builtin").is_test) if (test_hooks.before_left) |f| f(&r.state);
                // Acq_rel: the release half pairs with `main`'s acquire on its failed CAS (it
                // sees `thread` set); failing, the acquire half pairs with its CAS to `done`.
                if (r.state.cmpxchgStrong(running, left, .acq_rel, .acquire) == null) return false;
                countLeftOut(); // done meanwhile: not left after all
                break;
            }
            std.Thread.Futex.timedWait(&r.state, running, until - now) catch {};
        }
        r.thread.join(); // its wake below is its last touch of `r`
        std.heap.c_allocator.destroy(r);
        return true;
    }

    fn main(r: *LaterRunner) void {
        on_runner = true;
        r.list.runAll();
        // Acq_rel: pairs with the waiter's load (release half) and, failing, with its CAS to
        // `left` (acquire half: `thread` was set before it).
        if (r.state.cmpxchgStrong(running, done, .acq_rel, .acquire)) |_| {
            // The waiter gave up and forgot `r`: ours to free, and nobody joins this thread.
            r.thread.detach();
            std.heap.c_allocator.destroy(r);
            countLeftOut(); // the steps are done: a later collector waiting for them returns
            return;
        }
        std.Thread.Futex.wake(&r.state, 1);
    }

    /// One runner out of `left_count`, waking `awaitLeft` once none is left.
    fn countLeftOut() void {
        // Release: pairs with `awaitLeft`'s acquire load (what the steps did is seen by a
        // collector that reads the count 0).
        if (left_count.fetchSub(1, .release) == 1) std.Thread.Futex.wake(&left_count, std.math.maxInt(u32));
    }

    /// Waits until no runner an earlier collector left past its deadline still runs, until
    /// `deadline` (null: none): false if it passed first. At once on a runner's thread.
    fn awaitLeft(deadline: ?u64) bool {
        if (on_runner) return true;
        while (true) {
            // Acquire: pairs with `countLeftOut`'s release decrement.
            const n = left_count.load(.acquire);
            if (n == 0) return true;
            if (deadline) |d| {
                const now = monotonicNs();
                if (now >= d) return false;
                std.Thread.Futex.timedWait(&left_count, n, d - now) catch {};
            } else std.Thread.Futex.wait(&left_count, n);
        }
    }
};

/// CLOCK_MONOTONIC in nanoseconds: the clock of every deadline in kcoro (channels, select,
/// `parkUntil`, scopes, the later steps' runner). Here, the lowest layer that reads it; the
/// scheduler re-exports it (`scheduler.monotonicNs`).
pub fn monotonicNs() u64 {
    const ts = std.posix.clock_gettime(.MONOTONIC) catch unreachable; // always supported
    return @as(u64, @intCast(ts.sec)) * std.time.ns_per_s + @as(u64, @intCast(ts.nsec));
}

/// Waits until the steps a bounded collector left running past its deadline (`endBy`) are done,
/// until `deadline` (null: none): false if it passed first. At once on the thread running such
/// steps (a hook or on_done there that shuts a scheduler down would wait for itself). The C
/// ABI's shutdowns call it after their own steps: the next shutdown returns with them done.
pub fn awaitLeftLater(deadline: ?u64) bool {
    return LaterRunner.awaitLeft(deadline);
}

/// Set by a thread that runs abandoned coroutines' cleanups under locks a step they leave may
/// need (`Scheduler.shutdown`, under its lifecycle lock: a channel's undelivered hook that
/// spawns on that scheduler waited for itself there).
threadlocal var later_list: ?*LaterList = null;

/// Runs `x` now, or, while this thread collects (`collectLater`), once its collector let go
/// of its locks.
pub fn later(x: *Later) void {
    if (later_list) |list| list.push(x) else x.run(x);
}

/// Whether `later` defers on this thread now: a cleanup that must copy what it leaves (off the
/// coroutine's stack, which goes) copies only then.
pub fn collectingLater() bool {
    return later_list != null;
}

/// Makes `later` queue to `list` (null: run at once) on this thread; returns what it queued to
/// before, which the caller puts back.
pub fn collectLater(list: ?*LaterList) ?*LaterList {
    const prev = later_list;
    later_list = list;
    return prev;
}

/// Memory for what a cleanup leaves for later (`later`) when its allocator fails: carved in
/// order from a fixed block while anything made in it lives, reset when the last is freed
/// (after the collector let go of its locks). Without it, out of memory, what was left for
/// later had to be done there and then, under those locks. What does not fit (large values,
/// or more at once than the block holds) still is.
pub const later_reserve = struct {
    const size = 8 * 1024;
    var mutex: std.Thread.Mutex = .{};
    var block: [size]u8 align(16) = undefined;
    /// Bytes of `block` carved since the last reset, and the pieces among them not yet
    /// freed. Under `mutex`.
    var used: usize = 0;
    var live: usize = 0;

    /// `len` bytes aligned to `alignment` (at most 16), or null when the block has no room.
    pub fn alloc(len: usize, alignment: usize) ?[]u8 {
        assert(alignment <= 16);
        mutex.lock();
        defer mutex.unlock();
        const at = std.mem.alignForward(usize, used, alignment);
        if (at + len > size) return null;
        used = at + len;
        live += 1;
        return block[at..][0..len];
    }

    /// Gives back one piece `alloc` made.
    pub fn free() void {
        mutex.lock();
        defer mutex.unlock();
        assert(live > 0);
        live -= 1;
        if (live == 0) used = 0;
    }

    /// Nothing made in it lives (tests).
    pub fn idle() bool {
        mutex.lock();
        defer mutex.unlock();
        return live == 0 and used == 0;
    }
};

/// Why the coroutine last switched back to its resumer.
const Exit = enum(u8) { none, yield, park, finish };

threadlocal var current_co: ?*Coroutine = null;

/// Tests: code run at fixed points, to make a race's window certain.
pub var test_hooks: if (@import("builtin").is_test) struct {
    /// In `create`, every field but `transfer` written, before the store of the new generation.
    before_generation: ?*const fn () void = null,
    /// In `LaterRunner.runBy`, past its deadline, once it counted its runner left, before its
    /// CAS to `left` (given the runner's state word).
    before_left: ?*const fn (state: *const std.atomic.Value(u32)) void = null,
} else struct {} = .{};

// A coroutine may resume on another thread than the one it suspended on. The compiler assumes
// a function stays on one thread, so it may compute a threadlocal's address once and reuse it
// after a switch (on AArch64 it keeps the TPIDR_EL0 read; in a shared library it keeps the
// __tls_get_addr result): the coroutine would then read the old thread's variable. Every access
// from code that can run on a coroutine stack therefore goes through these non-inlined
// functions, which recompute the address on each call. (This was a real failure: workers ran
// the wrong coroutine under qemu-aarch64.)
noinline fn getCurrent() ?*Coroutine {
    const p: *volatile ?*Coroutine = &current_co;
    return p.*;
}

noinline fn setCurrent(co: ?*Coroutine) void {
    const p: *volatile ?*Coroutine = &current_co;
    p.* = co;
}

/// The calling thread's current-coroutine variable, for a thread that resumes coroutines only
/// from its own stack (a scheduler worker): that code never moves to another thread, so it may
/// keep the address and skip the calls above (`resumeFromThread`, `resumeYieldedFromThread`).
pub noinline fn threadSlot() *?*Coroutine {
    return &current_co;
}

pub const Coroutine = struct {
    /// The coroutine's own registers while it is not running. Each context starts a cache line
    /// so that saving the integer registers touches one line, not two.
    ctx: sw.Context align(64),
    /// The resumer's registers while the coroutine runs.
    caller: sw.Context align(64),
    switch_fn: sw.SwitchFn,
    /// `Word`: state, permit and generation. Changed only by CAS (see the file header).
    word: std.atomic.Value(u64),
    exit: Exit,
    fp_control: bool,
    /// Counted as finished by its scheduler already (`Scheduler.countFinishedNow`), before its
    /// entry returned: its worker does not count it again. False in a new coroutine.
    finish_counted: bool,
    entry: EntryFn,
    arg: ?*anyopaque,
    stack: Stack,
    /// The coroutine that was current on this thread when this one was resumed.
    prev: ?*Coroutine,
    /// A word the coroutine and its resumer may pass to each other (`yieldValue`).
    transfer: u64,
    /// The handle naming this coroutine, if it was created through a registry.
    handle: u32,
    /// Times resumed (for tests and stats).
    resumes: u64,
    /// Which of its registry's stack pools the stack came from.
    pool_id: u16,
    /// The run of the scheduler that runs it (`Scheduler.epoch`), 0 for a hand-driven one:
    /// what a `Ref` carries (`ref`). Written before the coroutine is published.
    epoch: u32,
    /// Scheduler bookkeeping (sched/scheduler.zig): the scheduler that runs this coroutine
    /// (null for a coroutine its creator resumes by hand), the link of its intrusive queues,
    /// its timer's `generation << 1 | armed` word, and the status its last wait ended with.
    owner: ?*anyopaque,
    link: ?*Coroutine,
    timer_state: std.atomic.Value(u32),
    wake_status: i32,
    /// The coroutine's immutable context (a reference it owns; `empty` by default).
    context: *ctx_mod.Context,
    /// What must be undone if the coroutine is abandoned where it stands, innermost first
    /// (`Cleanup`). Only the coroutine itself changes it while it can run.
    cleanups: ?*Cleanup,
    /// Runs once when the coroutine finishes (on its own stack, after its entry returned) or is
    /// abandoned (`runCleanups`, after the cleanups): set by code that keeps state in the side
    /// room beyond one call. Null in a new coroutine.
    finish: ?*Cleanup,
    /// Its ThreadSanitizer fiber and its resumer's (coro/tsan.zig); empty in other builds.
    tsan: tsan.Fiber,

    pub const Error = error{
        /// resume of a coroutine that is running (here or on another thread)
        Running,
        /// resume of a parked coroutine that nobody unparked yet
        NotRunnable,
        /// resume of a finished coroutine
        Finished,
    };

    /// Places a new coroutine at the top of `stack`, ready to run `entry(arg)` when resumed.
    /// The object sits 64 bytes below the top (where a stack pool keeps its free-list link) at
    /// the same address every time the stack is reused, so the generation continues.
    pub fn create(stack: Stack, entry: EntryFn, arg: ?*anyopaque, options: Options) *Coroutine {
        assert(stack.size >= 4096);
        assert(stack.top() % 16 == 0);
        const co = at(stack);
        const addr = @intFromPtr(co);
        // Stale `unpark`s and timers may still CAS `word` and `timer_state` of the previous
        // coroutine on this stack: write those two atomically, continuing their generations.
        // Monotonic: the stack came back through the pool (a mutex, or this worker's own
        // cache) after the previous coroutine finished, which orders its last writes of both
        // before these loads; a stale waker's CAS can no longer land (its generation or armed
        // word does not match a finished coroutine's).
        const old_gen: u32 = @truncate(co.word.load(.monotonic) >> 32);
        const old_timer = co.timer_state.load(.monotonic);
        co.ctx = .{};
        co.caller = .{};
        co.switch_fn = if (options.fp_control) sw.switch_fp else sw.switch_plain;
        co.exit = .none;
        co.fp_control = options.fp_control;
        co.finish_counted = false;
        co.entry = entry;
        co.arg = arg;
        co.stack = stack;
        co.prev = null;
        // Atomic: a resume by a stale handle may read it at any time (`Registry.identifyLive`);
        // monotonic, as the word's release store below publishes it.
        @atomicStore(u32, &co.handle, 0, .monotonic);
        co.resumes = 0;
        co.pool_id = 0;
        co.epoch = 0;
        // Atomic: `Registry.get` and `kc_coro_unpark` read it without a lock (monotonic, as
        // the handle above).
        @atomicStore(?*anyopaque, &co.owner, null, .monotonic);
        co.link = null;
        co.wake_status = 0;
        co.context = ctx_mod.empty;
        co.cleanups = null;
        co.finish = null;
        // The previous coroutine on this stack gave its fiber back: it finished (`afterSwitch`),
        // was abandoned through `runCleanups`, or never ran. One abandoned without
        // `runCleanups` (a leak of its fiber) trips this, under ThreadSanitizer only.
        tsan.assertNone(&co.tsan);
        co.tsan = .{};
        // Release: a timer heap's stale entry for the previous coroutine may be dropped on
        // seeing this word (acquire in the scheduler's prune and fire), counting out the disarm
        // that coroutine counted in before its CAS (`Scheduler.parkUntil`); that count in
        // happens before this store (the stack came back through the pool), so it is ordered
        // before the count out too (`Worker.countOut` asserts the count never goes below 0).
        co.timer_state.store(old_timer & ~@as(u32, 1), .release);
        if (@import("builtin").is_test) if (test_hooks.before_generation) |f| f();
        // Release: the fields above are written before anyone can see the new generation.
        co.word.store(@bitCast(Word{ .state = .created, .permit = false, .gen = old_gen +% 1 }), .release);
        // Atomic: `kc_coro_transfer` reads it without a lock through a handle that may be stale
        // (a plain store was a data race, ThreadSanitizer). A seqlock's data, the generation its
        // sequence: written after the generation changed (before, ahead of the word's store
        // above, a reader between the two read the new coroutine's 0 with the old generation
        // and answered it for the old handle). Release: pairs with that reader's acquire load,
        // so that one that reads this 0 then reads the new generation (the word's store above
        // is sequenced before this) and refuses the old handle. A reader of this coroutine's
        // own handle sees it: the handle is published after it (`Registry.create`'s and
        // `register`'s release stores; acquire in `lookupRef`).
        @atomicStore(u64, &co.transfer, 0, .release);
        // The stack proper starts below the object and its side room.
        sw.init(&co.ctx, addr - side_room_size, @intFromPtr(&coroMain), @intFromPtr(co));
        return co;
    }

    /// Registers `c` (memory on this coroutine's stack or owned by it) to run if the coroutine
    /// is abandoned before `popCleanup(c)`: a coroutine parked in a wait that a shutdown or a
    /// destroy gives up on never returns from it, so whatever the wait registered elsewhere (a
    /// waiter in a channel's queue, a link on a token, a reference) would dangle. Called by the
    /// coroutine itself; pushes and pops nest.
    pub inline fn pushCleanup(co: *Coroutine, c: *Cleanup) void {
        c.next = co.cleanups;
        co.cleanups = c;
    }

    /// Unregisters `c`, the last one pushed (the wait it guards is over).
    pub inline fn popCleanup(co: *Coroutine, c: *Cleanup) void {
        assert(co.cleanups == c); // pushes and pops nest
        co.cleanups = c.next;
    }

    /// Runs the cleanups of a coroutine that will never run again, innermost first. Only with
    /// no thread running it (after a shutdown joined the workers, or from `destroy`).
    pub fn runCleanups(co: *Coroutine) void {
        // (Its word may still say `running`: a scheduler's yield does not rewrite it.)
        while (co.cleanups) |c| {
            co.cleanups = c.next;
            c.run(c);
        }
        co.runFinish();
        tsan.destroy(&co.tsan);
    }

    /// Runs `finish` once, if set.
    fn runFinish(co: *Coroutine) void {
        const f = co.finish orelse return;
        co.finish = null;
        f.run(f);
    }

    /// The side room: `side_room_size` bytes right below the object, 64-byte aligned, its
    /// contents undefined in a new coroutine (see the file header).
    pub fn sideRoom(co: *Coroutine) *align(64) [side_room_size]u8 {
        return @ptrFromInt(@intFromPtr(co) - side_room_size);
    }

    /// Where the coroutine object of `stack` lives (whether or not one was ever created there).
    pub fn at(stack: Stack) *Coroutine {
        return @ptrFromInt(std.mem.alignBackward(usize, stack.top() - 64 - @sizeOf(Coroutine), 64));
    }

    /// True if a coroutine was created on this stack and has not finished. For a stack that was
    /// never used the object's memory is the zero fill of fresh pages: generation 0.
    pub fn isUnfinishedAt(stack: Stack) bool {
        const co = at(stack);
        const w = co.load(.acquire);
        return w.gen != 0 and w.state != .finished;
    }

    /// Marks a coroutine that was created but never resumed as finished, so that its stack can
    /// go back to the pool.
    pub fn discardUnstarted(co: *Coroutine) void {
        var w = co.load(.acquire);
        while (true) {
            assert(w.state == .created);
            var n = w;
            n.state = .finished;
            n.permit = false;
            w = co.cas(w, n) orelse return;
        }
    }

    /// Marks a coroutine its owner's destroy abandons where it stands as finished, so that it
    /// never runs again: a `resume` racing the destroy on another thread (a resume by handle)
    /// either started it first, and this returns false (it runs: not to be destroyed), or finds
    /// it finished; a late `unpark` through a `Ref` taken before returns false instead of
    /// reporting a wake-up of a coroutine nobody will resume. True if it was marked: the caller
    /// then owns what the coroutine left (its cleanups, its stack).
    pub fn abandon(co: *Coroutine) bool {
        var w = co.load(.acquire);
        while (true) {
            if (w.state == .running) return false;
            var n = w;
            n.state = .finished;
            n.permit = false;
            w = co.cas(w, n) orelse return true;
        }
    }

    /// Replaces the coroutine's context with `c` (taking over the caller's reference).
    pub fn setContext(co: *Coroutine, c: *ctx_mod.Context) void {
        const old = co.context;
        co.context = c;
        old.release();
    }

    /// Every caller loads with acquire: pairs with the release half of the acq_rel `cas` (and
    /// `create`'s release store) of the thread that made the last transition, so the caller
    /// sees what that thread wrote before it (the stack, `exit`, the unparker's data).
    fn load(co: *const Coroutine, comptime order: std.builtin.AtomicOrder) Word {
        return @bitCast(co.word.load(order));
    }

    /// Acq_rel on success: each transition publishes what the thread that made it wrote (the
    /// coroutine's stack, `exit`, the unparker's data) to the thread that makes the next one.
    fn cas(co: *Coroutine, old: Word, new: Word) ?Word {
        const got = co.word.cmpxchgWeak(@bitCast(old), @bitCast(new), .acq_rel, .acquire) orelse return null;
        return @bitCast(got);
    }

    /// The generation of the coroutine now on this stack (for a `Ref`).
    pub fn generation(co: *const Coroutine) u32 {
        return co.load(.acquire).gen;
    }

    /// A `Ref` to this coroutine as it is now (its generation and its scheduler's run).
    pub fn ref(co: *const Coroutine) Ref {
        return .{ .co = @constCast(co), .gen = co.generation(), .epoch = co.epoch };
    }

    /// Runs the coroutine until it yields, parks or finishes, and returns the state it is then
    /// in (suspended, parked, ready or finished). Any thread, but not concurrently with another
    /// `resume` of the same coroutine (the second one gets `error.Running`).
    pub fn @"resume"(co: *Coroutine) Error!State {
        try co.startRunning();
        return co.switchIn();
    }

    /// `resume` from a thread's own stack, with that thread's `threadSlot` (no coroutine is
    /// current there).
    pub fn resumeFromThread(co: *Coroutine, slot: *?*Coroutine) Error!State {
        try co.startRunning();
        return co.switchInFromThread(slot);
    }

    /// `resume`, but only of the coroutine of generation `gen` (`Stale` if the stack carries
    /// another one now, or none): for a resume by handle that may race a destroy of the handle
    /// and a create reusing its stack (`Registry.identifyLive`). The generation is checked in
    /// the same CAS that starts it, so it never runs a later coroutine of this stack.
    pub fn resumeGen(co: *Coroutine, gen: u32) (Error || error{Stale})!State {
        try co.startRunningOf(gen);
        return co.switchIn();
    }

    fn startRunning(co: *Coroutine) Error!void {
        co.startRunningOf(null) catch |err| switch (err) {
            error.Stale => unreachable, // no generation to check
            else => |e| return e,
        };
    }

    /// Marks a runnable coroutine running in one CAS that also checks its generation, when
    /// `gen` is given (`Stale` if the stack carries another one now).
    fn startRunningOf(co: *Coroutine, gen: ?u32) (Error || error{Stale})!void {
        // Acquire: pairs with the acq_rel CAS of the last transition (see `cas`).
        var w = co.load(.acquire);
        while (true) {
            if (gen) |g| if (w.gen != g) return error.Stale;
            switch (w.state) {
                .created, .ready, .suspended => {},
                .running => return error.Running,
                .parked => return error.NotRunnable,
                .finished => return error.Finished,
            }
            var n = w;
            n.state = .running;
            w = co.cas(w, n) orelse return;
        }
    }

    /// For a scheduler: continues a coroutine of its own that yielded, or that it woke with
    /// `unparkGenQueued`. Both stay in the running state while queued (runnable, waiting only
    /// for their turn), so this switch does not change the state word: two CAS fewer per
    /// yield, one per wake. An `unpark` that arrives meanwhile leaves a permit, as it would
    /// for any running coroutine.
    pub fn resumeYielded(co: *Coroutine) State {
        assert(co.owner != null);
        assert(co.exit == .yield or co.exit == .park);
        assert(co.getState() == .running);
        return co.switchIn();
    }

    /// `resumeYielded` from a thread's own stack, with its `threadSlot`.
    pub fn resumeYieldedFromThread(co: *Coroutine, slot: *?*Coroutine) State {
        assert(co.owner != null);
        assert(co.exit == .yield or co.exit == .park);
        assert(co.getState() == .running);
        return co.switchInFromThread(slot);
    }

    fn switchIn(co: *Coroutine) State {
        co.exit = .none;
        co.resumes += 1;
        co.prev = getCurrent();
        setCurrent(co);
        tsan.enter(&co.tsan); // nothing instrumented between this and the switch
        co.switch_fn(&co.caller, &co.ctx);
        setCurrent(co.prev);
        co.prev = null;
        return co.afterSwitch();
    }

    /// `switchIn` with the resuming thread's current-coroutine variable at hand: no coroutine
    /// is current there (asserted), and the thread does not move while the coroutine runs.
    fn switchInFromThread(co: *Coroutine, slot: *?*Coroutine) State {
        assert(slot == threadSlot());
        assert(slot.* == null);
        co.exit = .none;
        co.resumes += 1;
        co.prev = null;
        const v: *volatile ?*Coroutine = slot;
        v.* = co;
        tsan.enter(&co.tsan); // nothing instrumented between this and the switch
        co.switch_fn(&co.caller, &co.ctx);
        v.* = null;
        return co.afterSwitch();
    }

    /// Back from a switch into `co`: records the transition it asked for.
    fn afterSwitch(co: *Coroutine) State {
        // Its fiber goes before the CAS below makes it `finished`: from then on its stack may
        // go back to the pool and carry a new coroutine.
        if (co.exit == .finish) tsan.destroy(&co.tsan);
        // A scheduled coroutine that yielded stays `running` (see `resumeYielded`).
        if (co.exit == .yield and co.owner != null) return .suspended;
        // Record the transition the coroutine asked for. An `unpark` may set the permit at any
        // moment, hence the CAS loops.
        var w = co.load(.monotonic);
        while (true) {
            assert(w.state == .running);
            var n = w;
            const result: State = switch (co.exit) {
                .yield => .suspended,
                // A permit that arrived after park()'s check: consume it, stay runnable.
                .park => if (w.permit) .ready else .parked,
                .finish => .finished,
                .none => unreachable, // every switch back to the resumer sets `exit` first
            };
            n.state = result;
            if (result == .ready or result == .finished) n.permit = false;
            w = co.cas(w, n) orelse return result;
        }
    }

    /// Grants the coroutine a permit to continue. Returns true if this call moved it from
    /// parked to ready (the caller is then responsible for resuming it), false if it left a
    /// permit for the next `park`. Any thread.
    pub fn unpark(co: *Coroutine) bool {
        return co.unparkGen(co.generation());
    }

    /// `unpark`, but only if the coroutine on this stack is still generation `gen`; a stale
    /// generation (finished, stack reused) does nothing and returns false.
    pub fn unparkGen(co: *Coroutine, gen: u32) bool {
        return co.unparkTo(gen, .ready) == .woken;
    }

    /// For a scheduler of this coroutine: `unparkGen`, but a parked coroutine goes straight to
    /// `running` rather than `ready`. The scheduler queues it and continues it with
    /// `resumeYielded`, so `resume` need not CAS it from ready to running: one CAS fewer per
    /// wake. An `unpark` that arrives while it waits for its turn leaves a permit, as it would
    /// for any running coroutine (and as it does for a queued yielded one). Says what it did
    /// (`Unparked`), as the C ABI's unpark answers.
    pub fn unparkGenQueued(co: *Coroutine, gen: u32) Unparked {
        const did = co.unparkTo(gen, .running);
        // Checked only once this call woke it: then it is its scheduler's coroutine, and it
        // cannot run, finish and give its stack to another before the caller queues it. A stale
        // `Ref`'s stack may hold a later coroutine by now, rewritten on another thread: one
        // mid-`create`, which has no owner until `Scheduler.makeCoroutine` stores it. Before,
        // the assertion came first and read `owner` plainly: a data race with those atomic
        // stores (ThreadSanitizer), and a failed assertion for a wake that answers `stale`.
        // Atomic, as `kc_coro_unpark` reads it; monotonic: stored before the coroutine was
        // published, which the acquire load in `unparkTo` orders before this one.
        if (std.debug.runtime_safety and did == .woken) {
            assert(@atomicLoad(?*anyopaque, &co.owner, .monotonic) != null);
        }
        return did;
    }

    fn unparkTo(co: *Coroutine, gen: u32, comptime target: State) Unparked {
        var w = co.load(.acquire);
        while (true) {
            if (w.gen != gen) return .stale;
            var n = w;
            switch (w.state) {
                .parked => n.state = target,
                .finished => return .not_parked,
                // Permits coalesce, but a pending one is still set again by a CAS, never left
                // alone after a plain load: the CAS orders what the waker wrote before this
                // unpark (release) before the parker's consuming CAS (acquire), which reads
                // from it or from a later change. With a load only, a parker could consume the
                // older permit, then miss the waker's write (on x86 still in the waker's store
                // buffer), see no reason to run and park for good: a lost wake-up (the
                // scheduler's park/unpark ping-pong test hung a pair about once in 70 runs).
                else => n.permit = true,
            }
            if (co.cas(w, n)) |cur| {
                w = cur;
                continue;
            }
            // Woken only by the transition out of parked.
            return if (w.state == .parked) .woken else .not_parked;
        }
    }

    /// The coroutine's state now (acquire).
    pub fn getState(co: *const Coroutine) State {
        return co.load(.acquire).state;
    }

    /// Switches back to the resumer; the coroutine stays suspended until resumed again.
    /// Only from inside `co` itself.
    fn suspendTo(co: *Coroutine, why: Exit) void {
        assert(getCurrent() == co);
        assert(co.getState() == .running);
        // Counted out of its scheduler's live count already (`Scheduler.countFinishedNow`,
        // which a second call leaves alone: a built-in's, then its scope's `main`): it must not
        // park or yield after that, where it would run again while counted finished.
        assert(!co.finish_counted);
        co.exit = why;
        tsan.leave(&co.tsan); // nothing instrumented between this and the switch
        co.switch_fn(&co.ctx, &co.caller);
        // Resumed: `resume` set us running again (or `resumeYielded` kept us running).
        assert(co.getState() == .running);
    }
};

/// The coroutine running on this thread, or null on a thread's own stack.
/// Inlined in optimised builds; a call in Debug builds, where inlined calls keep their own
/// stack slots (coroutine stacks are small).
const hot: std.builtin.CallingConvention = if (@import("builtin").mode == .Debug) .auto else .@"inline";

/// The coroutine running on this thread (a scheduled or a hand-driven one), or null.
pub fn current() ?*Coroutine {
    return getCurrent();
}

pub const NotInCoroutine = error{NotInCoroutine};

/// Suspends the current coroutine; its resumer's `resume` returns `.suspended`.
pub fn yield() NotInCoroutine!void {
    const co = getCurrent() orelse return error.NotInCoroutine;
    co.suspendTo(.yield);
}

/// Sets the transfer word and yields (a generator's `yield value`).
pub fn yieldValue(v: u64) NotInCoroutine!void {
    const co = getCurrent() orelse return error.NotInCoroutine;
    // Atomic: `kc_coro_transfer` may read it from another thread at any time, by handle. Its
    // resumer reads it after the switch back (the same thread, or one the word's CAS ordered
    // after this); a reader elsewhere gets this word or the one before. Release: pairs with
    // that reader's acquire load, which may come through a stale handle of an earlier
    // coroutine on this stack: this coroutine's generation (stored before it ran) is then what
    // the reader's check after the load sees, and it refuses the word (see `create`).
    @atomicStore(u64, &co.transfer, v, .release);
    co.suspendTo(.yield);
}

/// Parks the current coroutine until `unpark`; returns at once if a permit is pending.
pub fn park() NotInCoroutine!void {
    parkCurrent(getCurrent() orelse return error.NotInCoroutine);
}

/// `park` for a caller that knows it runs as `co` (saves reading the thread-local: the channel
/// wait loop parks once per blocked operation). Only from inside `co` itself.
/// Inlined in optimised builds: every return on the way back from a switch is mispredicted
/// (the return-address predictor holds the other stack's addresses), ~4 ns each here.
pub fn parkCurrent(co: *Coroutine) callconv(hot) void {
    assert(getCurrent() == co);
    var w = co.load(.acquire);
    while (w.permit) {
        var n = w;
        n.permit = false;
        w = co.cas(w, n) orelse return; // consumed the permit
    }
    co.suspendTo(.park);
}

fn coroMain(co: *Coroutine) callconv(.c) noreturn {
    co.entry(co.arg);
    co.runFinish();
    co.exit = .finish;
    tsan.leave(&co.tsan); // nothing instrumented between this and the switch
    co.switch_fn(&co.ctx, &co.caller);
    unreachable; // a finished coroutine is never resumed (`resume` returns error.Finished)
}

/// Bytes of side room below each coroutine object (`Coroutine.sideRoom`).
pub const side_room_size = 640;

comptime {
    assert(@sizeOf(Coroutine) <= 512);
    assert(side_room_size % 64 == 0);
    // README.md states it twice ("Native channels": "keeps its waiters in the coroutine's side
    // room, 640 bytes below the coroutine object"; "Coroutine core", Stacks: "with 640 bytes
    // of side room below it"). A change here changes that text too.
    if (side_room_size != 640) @compileError("side_room_size changed: README.md (Native channels; Coroutine core, Stacks) says 640 bytes");
}

// ---------------------------------------------------------------------------------------------
// Tests

const testing = std.testing;
const Pool = stack_mod.Pool;

fn testPool() !Pool {
    return Pool.init(testing.allocator, .{ .stack_size = 32 * 1024, .max_free = 8 });
}

test "a bounded collector whose runner ended as its deadline passed counts it out again: the next shutdown does not wait for it" {
    // `LaterRunner.runBy` counts its runner left (`left_count`) before its CAS to `left`; a
    // runner that got to `done` first makes that CAS fail, and the collector joins it. Without
    // the count taken back there, `left_count` stayed 1 for good, and every later shutdown of
    // the C ABI waited for a runner that had ended (`awaitLeftLater`: for good with no bound).
    // The runner's end is made certain between the count and the CAS (`before_left`).
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    const S = struct {
        var gate = std.atomic.Value(bool).init(false);
        var ran = std.atomic.Value(bool).init(false);
        var saw_done = false;
        fn step(_: *Later) void {
            // Held until the collector is past its deadline (acquire: pairs with the release
            // store in `beforeLeft`), so that it counts this runner left.
            const g = test_wait.Deadline.in(test_wait.default_ns, "the step's gate");
            while (!gate.load(.acquire)) g.wait() catch break;
            ran.store(true, .release); // pairs with the test's acquire load
        }
        fn beforeLeft(state: *const std.atomic.Value(u32)) void {
            test_hooks.before_left = null; // once
            gate.store(true, .release);
            // Until the runner's CAS to `done` (acquire: pairs with its acq_rel CAS).
            const d = test_wait.Deadline.in(test_wait.default_ns, "the runner to end");
            while (state.load(.acquire) == LaterRunner.running) d.wait() catch return;
            saw_done = true;
        }
    };
    S.gate.store(false, .monotonic);
    S.ran.store(false, .monotonic);
    S.saw_done = false;
    // What an earlier test left running past its deadline, first.
    try testing.expect(awaitLeftLater(monotonicNs() + test_wait.default_ns));
    test_hooks.before_left = S.beforeLeft;
    defer test_hooks.before_left = null;
    var x: Later = .{ .run = S.step };
    var l: LaterList = .{};
    try testing.expect(l.begin());
    later(&x);
    try testing.expect(l.endBy(true, monotonicNs())); // past at once: its start slack only
    defer if (LaterRunner.left_count.load(.monotonic) != 0) LaterRunner.left_count.store(0, .monotonic); // for the next tests
    try testing.expect(S.saw_done);
    try testing.expect(S.ran.load(.acquire));
    try testing.expect(l.head == null);
    // Nothing is left: at once, with a deadline already passed.
    try testing.expect(awaitLeftLater(monotonicNs()));
}

test "a step on a runner its collector left past the deadline that waits for the runners left, with no bound, returns at once: it does not wait for itself" {
    // A step there is a hook or an on_done, which may call the C ABI's untimed
    // kc_sched_shutdown, and that waits for the runners left (`awaitLeftLater`, no bound):
    // this runner among them, counted left until its steps are done. `on_runner`, set for
    // every runner from its start, makes it answer at once there; without it this step waited
    // for itself for good (C ABI: "the shutdown after a timed one that left ...").
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    const S = struct {
        var gate = std.atomic.Value(bool).init(false);
        /// 0: not yet; 1: returned true; 2: returned false.
        var answer = std.atomic.Value(u32).init(0);
        fn step(_: *Later) void {
            // Held until the collector left this runner (acquire: pairs with the test's
            // release store, made after `endBy` returned).
            const g = test_wait.Deadline.in(test_wait.default_ns, "the step's gate");
            while (!gate.load(.acquire)) g.wait() catch break;
            // Release: pairs with the test's acquire load.
            answer.store(if (awaitLeftLater(null)) 1 else 2, .release);
        }
    };
    S.gate.store(false, .monotonic);
    S.answer.store(0, .monotonic);
    // What an earlier test left running past its deadline, first.
    try testing.expect(awaitLeftLater(monotonicNs() + test_wait.default_ns));
    var x: Later = .{ .run = S.step };
    var l: LaterList = .{};
    try testing.expect(l.begin());
    later(&x);
    // Past at once: the runner's start slack only, then left.
    try testing.expect(!l.endBy(true, monotonicNs()));
    try testing.expect(l.head == null);
    try testing.expectEqual(@as(u32, 1), LaterRunner.left_count.load(.monotonic));
    S.gate.store(true, .release);
    // The runner's step returns, and the runner counts itself out (its last act).
    try testing.expect(awaitLeftLater(monotonicNs() + test_wait.default_ns));
    try testing.expectEqual(@as(u32, 1), S.answer.load(.acquire));
}

test "later_reserve: no piece overlaps one still live, the block starts over once the last is freed, and a piece that does not fit is refused" {
    // Shutdowns of different schedulers carve it at once, and one's records may outlive
    // another's (a hook that runs long): a piece carved while another lives must not overlap
    // it, also after some other piece was freed. Before this test, no test carved a piece
    // while a freed one's neighbour still lived: a start-over at every free (not only the
    // last) passed the shutdown tests, and gave a live record's bytes out again.
    const R = later_reserve;
    try testing.expect(R.idle());
    try testing.expectEqual(@as(?[]u8, null), R.alloc(R.size + 1, 8)); // refused, nothing carved
    try testing.expect(R.idle());
    const a = R.alloc(40, 8).?;
    const b = R.alloc(24, 16).?;
    try testing.expectEqual(@as(usize, 0), @intFromPtr(b.ptr) % 16);
    try testing.expect(@intFromPtr(a.ptr) + a.len <= @intFromPtr(b.ptr));
    @memset(b, 0xb5);
    R.free(); // one of the two: `b` still lives
    const c = R.alloc(40, 8).?;
    @memset(c, 0xc5);
    try testing.expect(@intFromPtr(c.ptr) >= @intFromPtr(b.ptr) + b.len);
    for (b) |x| try testing.expectEqual(@as(u8, 0xb5), x);
    R.free();
    R.free();
    try testing.expect(R.idle());
    // Started over: the whole block again, then nothing more.
    const whole = R.alloc(R.size, 16).?;
    try testing.expectEqual(a.ptr, whole.ptr);
    try testing.expectEqual(@as(?[]u8, null), R.alloc(1, 1));
    R.free();
}

test "later_reserve from threads at once: each piece stays its carver's until freed" {
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.test_ns);
    defer wd.stop();
    const R = later_reserve;
    try testing.expect(R.idle());
    const S = struct {
        var bad: std.atomic.Value(u32) = .init(0);
        fn run(id: u8) void {
            var i: usize = 0;
            while (i < 2000) : (i += 1) {
                // Sizes that do not divide the block: some carves are refused near its end.
                const len = 24 + (i * 7 + id) % 200;
                const p = R.alloc(len, 8) orelse {
                    std.Thread.yield() catch {};
                    continue;
                };
                @memset(p, id);
                std.Thread.yield() catch {};
                for (p) |x| if (x != id) {
                    _ = bad.fetchAdd(1, .monotonic);
                    break;
                };
                R.free();
            }
        }
    };
    S.bad.store(0, .monotonic);
    var ts: [4]std.Thread = undefined;
    for (&ts, 0..) |*t, k| t.* = try std.Thread.spawn(.{}, S.run, .{@as(u8, @intCast(k + 1))});
    for (ts) |t| t.join();
    try testing.expectEqual(@as(u32, 0), S.bad.load(.monotonic));
    try testing.expect(R.idle());
}

test "a coroutine created on a stack whose last coroutine was abandoned without runCleanups (its sanitizer fiber leaked) trips an assertion under ThreadSanitizer" {
    // Only a ThreadSanitizer build has fibers to leak. In a child, which must die of the
    // assertion (SIGABRT); before, the new coroutine overwrote the fiber unchecked.
    if (!tsan.enabled) return error.SkipZigTest;
    const pid = try std.posix.fork();
    if (pid == 0) {
        std.posix.setrlimit(.CORE, .{ .cur = 0, .max = 0 }) catch {}; // no core file
        // Its panic's report would only look like a failure in the run's output.
        const null_fd = std.posix.open("/dev/null", .{ .ACCMODE = .WRONLY }, 0) catch std.posix.exit(2);
        std.posix.dup2(null_fd, std.posix.STDERR_FILENO) catch std.posix.exit(2);
        const S = struct {
            fn entry(_: ?*anyopaque) callconv(.c) void {
                yield() catch unreachable;
            }
        };
        var pool = Pool.init(std.heap.page_allocator, .{ .stack_size = 32 * 1024 }) catch std.posix.exit(2);
        const st = pool.acquire() catch std.posix.exit(2);
        const co = Coroutine.create(st, S.entry, null, .{});
        if ((co.@"resume"() catch std.posix.exit(2)) != .suspended) std.posix.exit(2); // its fiber made
        if (!co.abandon()) std.posix.exit(2); // as a destroy marks it, but no `runCleanups`
        _ = Coroutine.create(st, S.entry, null, .{}); // the same stack: trips the assertion
        std.posix.exit(0);
    }
    const res = try test_wait.waitChild(pid, test_wait.test_ns, "the forked child");
    try testing.expect(std.posix.W.IFSIGNALED(res.status));
    try testing.expectEqual(@as(u32, std.posix.SIG.ABRT), std.posix.W.TERMSIG(res.status));
}

test "yield suspends and resume continues where it left off" {
    var pool = try testPool();
    defer pool.deinit();
    const S = struct {
        fn entry(arg: ?*anyopaque) callconv(.c) void {
            const n: *u32 = @ptrCast(@alignCast(arg.?));
            var i: u32 = 0;
            while (i < 3) : (i += 1) {
                n.* += 1;
                yield() catch unreachable;
            }
        }
    };
    var n: u32 = 0;
    const st = try pool.acquire();
    defer pool.release(st);
    const co = Coroutine.create(st, S.entry, &n, .{});
    try testing.expectEqual(State.created, co.getState());
    try testing.expectEqual(State.suspended, try co.@"resume"());
    try testing.expectEqual(@as(u32, 1), n);
    try testing.expectEqual(State.suspended, try co.@"resume"());
    try testing.expectEqual(State.suspended, try co.@"resume"());
    try testing.expectEqual(@as(u32, 3), n);
    try testing.expectEqual(State.finished, try co.@"resume"());
    try testing.expectError(error.Finished, co.@"resume"());
    try testing.expect(current() == null);
}

test "yield outside a coroutine is an error" {
    try testing.expectError(error.NotInCoroutine, yield());
    try testing.expectError(error.NotInCoroutine, park());
}

test "park waits for unpark; unpark before park is not lost" {
    var pool = try testPool();
    defer pool.deinit();
    const S = struct {
        fn entry(arg: ?*anyopaque) callconv(.c) void {
            const steps: *u32 = @ptrCast(@alignCast(arg.?));
            steps.* = 1;
            park() catch unreachable; // parks for real
            steps.* = 2;
            // The resumer unparks us before we park: park must return at once.
            yield() catch unreachable;
            park() catch unreachable;
            steps.* = 3;
        }
    };
    var steps: u32 = 0;
    const st = try pool.acquire();
    defer pool.release(st);
    const co = Coroutine.create(st, S.entry, &steps, .{});
    try testing.expectEqual(State.parked, try co.@"resume"());
    try testing.expectEqual(@as(u32, 1), steps);
    try testing.expectError(error.NotRunnable, co.@"resume"());
    try testing.expect(co.unpark());
    try testing.expectEqual(State.ready, co.getState());
    // Already ready: a second unpark only leaves a permit, and must not report a wake-up (the
    // scheduler would queue the coroutine twice).
    try testing.expect(!co.unpark());
    try testing.expectEqual(State.ready, co.getState());
    try testing.expectEqual(State.suspended, try co.@"resume"());
    try testing.expectEqual(@as(u32, 2), steps);
    try testing.expect(!co.unpark()); // not parked: leaves a permit
    try testing.expectEqual(State.finished, try co.@"resume"());
    try testing.expectEqual(@as(u32, 3), steps);
}

test "an unpark during the park's switch makes the coroutine ready, not parked" {
    var pool = try testPool();
    defer pool.deinit();
    const S = struct {
        var target: ?*Coroutine = null;
        fn entry(_: ?*anyopaque) callconv(.c) void {
            // Simulate another thread's unpark landing after the permit check in park() but
            // before the resumer records `parked`: grant the permit from inside, then suspend
            // with the park exit directly.
            const co = current().?;
            _ = co.unpark(); // we are running, so this only leaves a permit
            co.suspendTo(.park);
        }
    };
    const st = try pool.acquire();
    defer pool.release(st);
    const co = Coroutine.create(st, S.entry, null, .{});
    try testing.expectEqual(State.ready, try co.@"resume"());
    try testing.expectEqual(State.finished, try co.@"resume"());
}

test "park/unpark across threads loses no wake-up" {
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.stress_ns);
    defer wd.stop();
    var pool = try testPool();
    defer pool.deinit();
    // Fewer rounds on aarch64: the suite runs there under qemu-user, where a cross-thread
    // hand-off costs far more.
    const rounds: u32 = if (@import("builtin").cpu.arch == .aarch64) 3_000 else 20_000;
    const S = struct {
        var round: std.atomic.Value(u32) = .init(0);
        var stop: std.atomic.Value(bool) = .init(false);
        fn entry(_: ?*anyopaque) callconv(.c) void {
            for (0..rounds) |_| {
                // Release: pairs with the unparker's acquire; it unparks only after this.
                _ = round.fetchAdd(1, .release);
                park() catch unreachable;
            }
        }
        fn unparker(co: *Coroutine) void {
            for (1..rounds + 1) |i| {
                while (round.load(.acquire) < i) {
                    if (stop.load(.monotonic)) return;
                    std.Thread.yield() catch {};
                }
                _ = co.unpark();
            }
        }
    };
    S.round.store(0, .monotonic);
    S.stop.store(false, .monotonic);
    const st = try pool.acquire();
    defer pool.release(st);
    const co = Coroutine.create(st, S.entry, null, .{});
    const t = try std.Thread.spawn(.{}, S.unparker, .{co});
    defer t.join();
    errdefer S.stop.store(true, .monotonic);
    // A lost wake-up shows as no progress at all: the coroutine parked, its unpark issued, and
    // nothing ever makes it ready. Allow 10 s without progress, however slow the machine.
    var last_round: u32 = 0;
    var stalled_since = std.time.nanoTimestamp();
    while (true) {
        const s = co.@"resume"() catch |e| switch (e) {
            error.NotRunnable => {
                const r = S.round.load(.monotonic);
                const now = std.time.nanoTimestamp();
                if (r != last_round) {
                    last_round = r;
                    stalled_since = now;
                } else if (now - stalled_since > 10 * std.time.ns_per_s) {
                    return error.LostWakeup;
                }
                std.Thread.yield() catch {};
                continue;
            },
            else => return e,
        };
        if (s == .finished) break;
    }
    try testing.expectEqual(rounds, S.round.load(.monotonic));
}

test "a stale Ref does not wake the next coroutine on the same stack" {
    var pool = try testPool();
    defer pool.deinit();
    const S = struct {
        fn quick(_: ?*anyopaque) callconv(.c) void {}
        fn parker(_: ?*anyopaque) callconv(.c) void {
            park() catch unreachable;
        }
    };
    const st = try pool.acquire();
    defer pool.release(st);
    const first = Coroutine.create(st, S.quick, null, .{});
    const stale = first.ref();
    try testing.expectEqual(State.finished, try first.@"resume"());
    try testing.expect(!stale.unpark()); // finished: nothing to do
    const second = Coroutine.create(st, S.parker, null, .{});
    try testing.expectEqual(first, second); // same stack, same address
    try testing.expect(second.generation() != stale.gen);
    try testing.expectEqual(State.parked, try second.@"resume"());
    try testing.expect(!stale.unpark()); // stale: must not wake the stranger
    try testing.expectEqual(State.parked, second.getState());
    const fresh = second.ref();
    try testing.expect(fresh.unpark());
    try testing.expectEqual(State.finished, try second.@"resume"());
}

test "a scheduler's wake by a stale Ref answers stale when the stack holds a coroutine without an owner (one mid-create)" {
    // `unparkGenQueued` (a scheduler's wake, any thread) asserted the owner before it checked
    // the generation: a stale Ref whose stack carried a coroutine mid-`create` (its owner not
    // stored yet) failed that assertion instead of answering `stale`.
    var pool = try testPool();
    defer pool.deinit();
    const S = struct {
        var sched_stand_in: u8 = 0; // any address: only `owner != null` is read here
        fn quick(_: ?*anyopaque) callconv(.c) void {}
        fn parker(_: ?*anyopaque) callconv(.c) void {
            park() catch unreachable;
        }
    };
    const st = try pool.acquire();
    defer pool.release(st);
    const first = Coroutine.create(st, S.quick, null, .{});
    const stale = first.ref();
    try testing.expectEqual(State.finished, try first.@"resume"());
    const second = Coroutine.create(st, S.parker, null, .{}); // no owner: as mid-create
    try testing.expectEqual(first, second);
    try testing.expectEqual(Unparked.stale, second.unparkGenQueued(stale.gen));
    try testing.expectEqual(State.created, second.getState());
    try testing.expectEqual(State.parked, try second.@"resume"());
    try testing.expectEqual(Unparked.stale, second.unparkGenQueued(stale.gen));
    try testing.expectEqual(State.parked, second.getState()); // the stranger stays parked
    // Its own generation, once a scheduler owns it: woken straight to running.
    @atomicStore(?*anyopaque, &second.owner, &S.sched_stand_in, .monotonic);
    try testing.expectEqual(Unparked.woken, second.unparkGenQueued(second.generation()));
    try testing.expectEqual(State.running, second.getState());
    try testing.expectEqual(State.finished, second.resumeYielded());
}

test "yieldValue passes a word to the resumer" {
    var pool = try testPool();
    defer pool.deinit();
    const S = struct {
        fn entry(_: ?*anyopaque) callconv(.c) void {
            var a: u64 = 0;
            var b: u64 = 1;
            for (0..10) |_| {
                yieldValue(a) catch unreachable;
                const next = a + b;
                a = b;
                b = next;
            }
        }
    };
    const st = try pool.acquire();
    defer pool.release(st);
    const co = Coroutine.create(st, S.entry, null, .{});
    const want = [_]u64{ 0, 1, 1, 2, 3, 5, 8, 13, 21, 34 };
    for (want) |w| {
        try testing.expectEqual(State.suspended, try co.@"resume"());
        try testing.expectEqual(w, co.transfer);
    }
    try testing.expectEqual(State.finished, try co.@"resume"());
}

test "nested coroutines restore current on the way back" {
    var pool = try testPool();
    defer pool.deinit();
    const S = struct {
        var inner: *Coroutine = undefined;
        var seen_outer: ?*Coroutine = null;
        var seen_inner: ?*Coroutine = null;
        fn innerEntry(_: ?*anyopaque) callconv(.c) void {
            seen_inner = current();
        }
        fn outerEntry(_: ?*anyopaque) callconv(.c) void {
            _ = inner.@"resume"() catch unreachable;
            seen_outer = current();
        }
    };
    const st1 = try pool.acquire();
    defer pool.release(st1);
    const st2 = try pool.acquire();
    defer pool.release(st2);
    const outer = Coroutine.create(st1, S.outerEntry, null, .{});
    S.inner = Coroutine.create(st2, S.innerEntry, null, .{});
    try testing.expectEqual(State.finished, try outer.@"resume"());
    try testing.expectEqual(S.inner, S.seen_inner.?);
    try testing.expectEqual(outer, S.seen_outer.?);
    try testing.expect(current() == null);
}

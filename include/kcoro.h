/*
 * kcoro: stackful coroutines for C, Zig and Deno. C ABI of libkcoro.so.
 *
 * Every function returns an int32_t status unless its comment says otherwise: 0 (or a
 * non-negative result) on success, a negative KC_E* code on failure. Objects are named by
 * uint32_t handles with a generation count; a stale, destroyed or forged handle returns
 * KC_EBADH and never crashes the process. zig-src/root.zig is the implementation; a Zig test
 * checks this header against it.
 */
#ifndef KCORO_H
#define KCORO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped on every incompatible change. Compare with kc_abi_version() after loading. ABI 26 added
 * kc_actor_take (a handler's message in hand is its own: an abandoning shutdown does not give it
 * to the undelivered hook) and kc_sched_abandoned (how many coroutines a shutdown abandoned, a
 * finish's parked ones among them). ABI 25 added
 * kc_cells_release and kc_cells_pin (TypeScript's cells are kc_cells_alloc's in every isolate,
 * released by their buffers' V8 backing-store deleter once no buffer views them, and held by pins
 * while a coroutine may write) and kc_sched_shutdown_timed (a bounded join, TypeScript's exit
 * guard's): a library of ABI 24 lacks symbols TypeScript binds. ABI 24 added
 * kc_chan_status bit 4 (cancelled, by any cancel): a cancelled channel's status, which ABI 23
 * answered without it (3 for a plain cancel), now has it set (19), so a caller comparing exact
 * values sees another one. ABI 23 added
 * kc_chan_cancel_cause (a channel's first cancel keeps its cause also after a close; see
 * kc_chan_close_cause), kc_chan_status bit 3 (cancelled after a close), kc_chan_serial (a
 * channel's identity across a handle value's reuse) and KC_TAG_STRUCTURED/KC_TAG_PACKED; the
 * last kc_chan_unhold now cancels and seals before the handle dies, as kc_chan_destroy does. It
 * also changed what TypeScript writes for an empty string or bytes on a zero-copy channel: now
 * {NULL, 0, NULL, tag}, as kc_desc_make of 0 bytes (see "What TypeScript sends" at
 * KC_TAG_STRING). */
#define KC_ABI_VERSION 26

/* Status codes (negated Linux errno values of the closest meaning). */
#define KC_OK 0
#define KC_ENOTCORO (-1)    /* called outside a coroutine */
#define KC_EINTR (-4)       /* the operation's cancellation token was cancelled */
#define KC_EBADH (-9)       /* stale, destroyed, forged or wrong-kind handle */
#define KC_EAGAIN (-11)     /* would block (try-operations) */
#define KC_ENOMEM (-12)     /* out of memory or handles */
#define KC_EBUSY (-16)      /* not allowed in the object's current state */
#define KC_EINVAL (-22)     /* invalid argument */
#define KC_EPIPE (-32)      /* closed */
#define KC_ETIME (-62)      /* deadline passed */
#define KC_ESHUTDOWN (-108) /* runtime shut down */
#define KC_ECANCELED (-125) /* cancelled */

/* Coroutine states, as returned by kc_coro_resume and kc_coro_state. */
#define KC_STATE_CREATED 0
#define KC_STATE_READY 1
#define KC_STATE_RUNNING 2
#define KC_STATE_SUSPENDED 3
#define KC_STATE_PARKED 4
#define KC_STATE_FINISHED 5

/* kc_coro_create flags. */
#define KC_CORO_FP_CONTROL (1u << 0) /* save/restore MXCSR+x87 CW (FPCR on ARM64) per switch */
#define KC_CORO_SLAB_STACK (1u << 1) /* stack from a shared slab: canary, no guard page */

/* Built-in entry functions (kc_builtin_entry). Hand-driven ones take an integer `arg`;
 * scheduled ones take `arg` -> uint64_t cells (2 to 5, as each says), which they update
 * atomically. A scheduled one given a NULL `arg` is KC_EINVAL at kc_spawn, kc_spawn_gen,
 * kc_scope_launch, kc_produce and kc_coro_create (before, it started and dereferenced NULL);
 * fewer cells than it reads, or a pointer that is not one, is not checked (undefined).
 * SPIN, ECHO and CHAN_SENDER, whose loops may never park, yield on a scheduler now and then
 * (every 2^20 steps; every 256 values) and stop there once a cancelling shutdown has begun (a
 * finishing one's drain waits for them, as for any coroutine, until a cancel cuts it short):
 * SPIN leaves `done` as it was, ECHO and CHAN_SENDER end as on a failed operation (nothing in
 * hand). ECHO and CHAN_SENDER also end so there when their native scope is cancelled: their
 * channel operations that never wait do not see its KC_EINTR; SPIN stops there too, `done` as
 * it was (before, it ran all its rounds in the cancelled scope). All three stop there the same
 * way once their context deadline (kc_scope_set_deadline) has passed, which operations that
 * never wait do not see as KC_ETIME (before, they ran on past it). Hand-driven (kc_coro_create),
 * the three yield back to their resumer at those points: kc_coro_resume returns
 * KC_STATE_SUSPENDED, and the loop goes on when resumed (before, a hand-driven ECHO on its own
 * conflated channel never returned from kc_coro_resume). */
#define KC_BUILTIN_FIB 1        /* hand-driven: the first `arg` Fibonacci numbers, mod 2^64 */
#define KC_BUILTIN_YIELD_LOOP 2 /* hand-driven: yields forever, transfer word = yields so far */
#define KC_BUILTIN_PARK_LOOP 3  /* hand-driven: parks `arg` times, transfer word = wake-ups */
#define KC_BUILTIN_SLEEPER 4    /* scheduled: {ms, done}: sleeps ms, then done += 1 */
#define KC_BUILTIN_SKYNET 5     /* scheduled: {leaves, result}: skynet tree, result = sum */
#define KC_BUILTIN_SPIN 6       /* scheduled: {rounds, done}: CPU-bound work, then done += 1 */
/* Scheduled, {arg, done, status}: status is an int32_t status as two's complement, done = 1. */
/* These two, abandoned in their wait (a cancelling shutdown, a finish that leaves a receiver
 * parked, a kc_coro_destroy): status = KC_ESHUTDOWN, done = 1 (a library of ABI 25 left both
 * at 0 there). */
/* {ms, ...}: kc_sleep_ns; KC_EINTR if its scope is cancelled; hand-driven, KC_ENOTCORO */
#define KC_BUILTIN_CANCELLABLE_SLEEPER 7
#define KC_BUILTIN_RECEIVER 8     /* {chan, ...}: receives one value; KC_EINTR likewise */
#define KC_BUILTIN_CANCEL_SCOPE 9 /* {-, ...}: kc_scope_cancel of the scope it runs in: 1/0 */
#define KC_BUILTIN_READ_DEADLINE 11 /* scheduled: {deadline, done, status}: kc_deadline() */
#define KC_BUILTIN_ECHO 12 /* scheduled: uint64_t[4] {in chan, out chan, echoed, done}: sends each
                            * 8-byte value of `in` to `out` until either fails, then done = 1;
                            * the value in hand when its send to `out` fails goes to
                            * out's undelivered path once (a cancel failing the waiting
                            * send hands it over; else the echo's kc_chan_drop), as it does
                            * when a shutdown or kc_coro_destroy abandons the echo in that
                            * send; abandoned (in a wait or at a turn), done = 1 too (ABI 25: 0) */
#define KC_BUILTIN_CHAN_SENDER 10 /* scheduled: uint64_t[5] {chan, first, count, sent, done}: sends
                                  * u64 first..first+count-1 (sent += 1 each), then done += 1,
                                  * also when abandoned (ABI 25: done unchanged then) */

/* kc_sched_shutdown modes. */
#define KC_SHUTDOWN_CANCEL 0 /* stop now; unfinished coroutines never run again */
#define KC_SHUTDOWN_FINISH 1 /* drain first */

typedef void (*kc_entry_fn)(void *arg);

/* ABI version of the loaded library (never fails). */
uint32_t kc_abi_version(void);
/* Name of a status code, e.g. "KC_EBADH"; "KC_RESULT" for a positive value (a successful call's
 * result: a count, a state, 1 for yes or the first time, as kc_scope_cancel's; not an error);
 * "KC_EUNKNOWN" for other negative values (never fails). ABI 14 named positive values
 * "KC_EUNKNOWN". */
const char *kc_status_name(int32_t status);
/* Counts one more host of the library (a Deno isolate, a C program); returns the new count. */
uint32_t kc_lib_retain(void);
/* Counts one host out: how many remain (0: the caller was the last and may shut the process-wide
 * scheduler down), KC_EINVAL if none was counted. On a thread (not a coroutine, nor a scheduler
 * worker's thread) that holds a host of kc_lib_retain_thread and none of kc_lib_retain of its own,
 * it counts out that thread host, which the thread's end then no longer does (before, the end
 * counted it out again, which could shut the scheduler down under another host); a plain host the
 * thread retained goes first, also one a coroutine released since (that release counted nothing
 * of a thread): release a plain host on the thread that retained it. */
int32_t kc_lib_release(void);
/* kc_lib_retain for a host that lives on the calling thread: the hosts a thread still holds when
 * it ends are counted out for it (the last one also shuts the scheduler down). From a coroutine
 * or a scheduler worker's thread it is kc_lib_retain (nothing is bound to the thread). Where the
 * thread's record of its hosts cannot be made (no memory) the host is counted all the same, and
 * kc_lib_release_thread on this thread counts it out; the thread's end counts it out only where
 * a later call on the thread made the record (a kc_lib_retain_thread, a kc_chan_hold), which
 * takes it. */
uint32_t kc_lib_retain_thread(void);
/* kc_lib_release for a host of kc_lib_retain_thread, on its thread; KC_EINVAL if it holds none.
 * From a coroutine or a worker's thread it is kc_lib_release. */
int32_t kc_lib_release_thread(void);

/* Creates a coroutine that will run entry(arg) when first resumed. stack_size 0 = 64 KiB;
 * otherwise 16 KiB .. 256 MiB, rounded up to pages (KC_EINVAL outside, and for a 17th distinct
 * pair of rounded size and stack kind, guarded or slab: the process keeps 16 stack pools). */
int32_t kc_coro_create(kc_entry_fn entry, void *arg, uint32_t stack_size, uint32_t flags,
                       uint32_t *out_handle);
/* Runs the coroutine until it yields, parks or finishes; returns the KC_STATE_* it is then in.
 * KC_EBUSY if it is running, parked (not yet unparked) or finished; KC_EINVAL for a scheduled
 * coroutine's handle (kc_spawn's out_handle: the scheduler runs it). Safe against a
 * kc_coro_destroy of the same handle on another thread (or the end of a thread that holds it):
 * the one that reaches the coroutine first wins, and a resume that lost returns KC_EBADH. */
int32_t kc_coro_resume(uint32_t handle);
/* From inside a coroutine: back to the resumer (KC_ENOTCORO elsewhere). */
int32_t kc_coro_yield(void);
/* Sets the transfer word and yields. */
int32_t kc_coro_yield_value(uint64_t value);
/* From inside a coroutine: park until kc_coro_unpark; returns at once if a permit is pending. */
int32_t kc_coro_park(void);
/* Any thread: 1 if the coroutine went from parked to ready (resume it), 0 if a permit was left
 * (or it had finished, also by a kc_coro_destroy on another thread after the unpark's lookup:
 * nobody woken, no permit left; or, for a scheduled coroutine, its scheduler is shutting down:
 * nobody woken and no permit left either, the shutdown abandons what has not finished).
 * KC_EBADH for a dead handle, also when a kc_coro_destroy (or, for a scheduled coroutine, its
 * end) and a create reusing its stack on another thread came between the unpark's lookup and
 * its wake: nobody woken, no permit left, as kc_coro_transfer answers then (before, 0). */
int32_t kc_coro_unpark(uint32_t handle);
/* The coroutine's KC_STATE_*. */
int32_t kc_coro_state(uint32_t handle);
/* Reads the coroutine's transfer word into *out; KC_EBADH for a dead handle, also once its stack
 * carries a later coroutine (never that one's word). */
int32_t kc_coro_transfer(uint32_t handle, uint64_t *out);
/* Frees the coroutine and recycles its stack (KC_EBUSY while it runs, also when a resume on
 * another thread started it first: the two may race). An unfinished coroutine
 * is abandoned without unwinding its stack. Stacks stay mapped for reuse (kc_coro_stats' third
 * value does not shrink): beyond 1,024 free ones of a size, their memory below the top page goes
 * back to the kernel. KC_EINVAL for a scheduled coroutine's handle (it is
 * freed when it finishes). */
int32_t kc_coro_destroy(uint32_t handle);
/* The calling thread holds the hand-driven coroutine: when the thread ends, it is destroyed
 * unless destroyed first (kc_coro_destroy on this thread forgets the hold). For a host whose
 * own way of destroying it dies with the thread: a JavaScript Worker's garbage collector, whose
 * finalizers never run once the Worker has ended. A coroutine running at that moment runs on
 * another thread (as with kc_coro_destroy, KC_EBUSY): it is left alive, its stack in use; a
 * resume on another thread that comes after the destroy gets KC_EBADH. Holding it again is the
 * same hold. KC_EBADH for a dead handle, KC_EINVAL for a scheduled coroutine's and from a
 * coroutine or a scheduler worker's thread (which ends at kc_sched_shutdown), KC_ENOMEM. New in
 * ABI 18. */
int32_t kc_coro_hold(uint32_t handle);
/* Handle of the coroutine running on this thread, 0 outside one (never fails). */
uint32_t kc_coro_current(void);
/* Fills up to len of [live coroutine handles, pooled free stacks, stack mappings, live blocks of
 * cells (kc_cells_alloc's not yet freed; the fourth new in ABI 25), live channel handles (the
 * fifth, a leak check, still ABI 26: a library that returns 4 for len 5 lacks it)]; returns count.
 * The first counts handles, not coroutines still running: a hand-driven coroutine's until
 * kc_coro_destroy, a scheduled one's (spawned or launched with out_handle; one without is never
 * counted here) until its worker frees it, after its entry returned (at a shutdown, after its
 * cleanups). So a built-in whose done cell shows, or a scope's child once its scope is seen done,
 * may still count here a moment longer, kc_coro_state answering for its handle meanwhile, while
 * kc_sched_info's live count (coroutines not yet finished) counted it out before that. */
int32_t kc_coro_stats(uint64_t *out, uint32_t len);
/* A built-in entry function (KC_BUILTIN_*), or NULL (never fails). */
const void *kc_builtin_entry(uint32_t id);
/* count zeroed 8-byte cells of native memory, live until kc_cells_release (and the last pin's
 * kc_cells_pin) or the process's end (for a built-in started by an isolate that may end before it
 * does), or NULL (count 0, out of memory). 16-byte aligned, after a 48-byte header of their own. */
uint64_t *kc_cells_alloc(uint32_t count);
/* Nothing but the pins reaches cells kc_cells_alloc returned any more: freed now if no pin is
 * held, else by the kc_cells_pin that takes the last away; NULL does nothing. Once per block;
 * after it only the pins' holders may use the cells (as free(3), a use after the free is
 * undefined). An address that is no live block's (one into a block, one not 16-byte aligned,
 * one into other memory, one whose bytes before it are unmapped, a freed block's of any size),
 * and a second release while pins hold the block, do nothing, in every build, and never fault:
 * the address is looked up in the library's list of its live blocks before anything there is
 * read (another library copy's block: its header is copied out with process_vm_readv, or
 * through a pipe where that call is not allowed, neither of which can fault). Memory that is a
 * new block again is that block's (it is released). Safe from any thread (TypeScript's buffers
 * call it from V8's backing-store deleter). New in ABI 25. */
void kc_cells_release(uint64_t *cells);
/* Adds delta (negative: takes away) to the pins of cells kc_cells_alloc returned: a pin keeps
 * kc_cells_release from freeing them until it is taken away. KC_EINVAL for NULL, an address
 * that is no live block's (as kc_cells_release looks it up, never faulting), or pins that would
 * go below 0 or past 2^32 - 1 (nothing changed). Safe from any thread. New in ABI 25. */
int32_t kc_cells_pin(uint64_t *cells, int32_t delta);

/* The scheduler: one per process. Every call is safe from any thread, starts and shutdowns
 * racing each other and the other calls included (kc_sched_shutdown from a coroutine is
 * KC_EINVAL: a worker cannot join itself). */

/* Starts the worker threads (workers 0 = one per CPU; at most 1024; stack_size 0 = 64 KiB,
 * otherwise as for kc_coro_create; flags as for kc_coro_create, applied to every spawned
 * coroutine). KC_EINVAL outside those bounds (also for more than 1024 CPUs with workers 0);
 * KC_EBUSY if already running; KC_ESHUTDOWN while a shutdown is still in progress (start once
 * it returned), also once a kc_sched_shutdown_timed gave up with KC_EBUSY (the next shutdown
 * goes on). KC_ENOMEM if memory or a worker thread could not be had: the threads that started
 * are joined and everything is freed, nothing runs (kc_sched_info reads none running, its
 * generation not counted; a shutdown does nothing) and a later kc_sched_start may try again. */
int32_t kc_sched_start(uint32_t workers, uint32_t stack_size, uint32_t flags);
/* Runs entry(arg) as a scheduled coroutine; it inherits the spawning coroutine's context.
 * flags: KC_CORO_FP_CONTROL (stacks are the scheduler's: KC_CORO_SLAB_STACK is KC_EINVAL).
 * With out_handle, the coroutine gets a handle valid until it finishes. KC_ESHUTDOWN if the
 * scheduler is not running. */
int32_t kc_spawn(kc_entry_fn entry, void *arg, uint32_t flags, uint32_t *out_handle);
/* kc_spawn onto the scheduler of one generation (kc_sched_info's seventh value, not 0:
 * KC_EINVAL) only: KC_ESHUTDOWN once that one is shut down, also when a later one runs, even one
 * a shutdown and restart by another thread started after the generation was read. New in ABI 15. */
int32_t kc_spawn_gen(kc_entry_fn entry, void *arg, uint32_t flags, uint32_t *out_handle,
                     uint64_t generation);
/* CLOCK_MONOTONIC in nanoseconds: the clock of kc_park_until (never fails). */
uint64_t kc_now_ns(void);
/* The channel counters' coarse clock word: even = the time (ns, kc_now_ns clock) as of its last
 * tick, changing once a tick while read (a tick: the coarse clock's granularity, within 1-10 ms:
 * 1 ms on a 1000 Hz kernel, 4 ms on a 250 Hz one); odd while it checks for readers; 1 = no ticker.
 * Read it per operation and call kc_clock_now only when it changed or is odd. */
const uint64_t *kc_clock_word(void);
/* The counters' coarse clock now (first_op_ns / last_op_ns are in it); keeps its ticker running. */
uint64_t kc_clock_now(void);
/* Inside a scheduled coroutine: parks until kc_coro_unpark (0) or deadline_ns (KC_ETIME). May
 * return 0 early for no reason, like kc_coro_park: re-check the condition you wait for. */
int32_t kc_park_until(uint64_t deadline_ns);
/* Inside a scheduled coroutine: parks it for at least ns. On a plain thread: blocks it.
 * KC_EINVAL inside a hand-driven coroutine. */
int32_t kc_sleep_ns(uint64_t ns);
/* Blocks until no coroutine is runnable, running or sleeping (parked ones do not count).
 * KC_EINVAL at once from one of the scheduler's coroutines (it would wait for itself);
 * KC_ESHUTDOWN when no scheduler runs. */
int32_t kc_sched_drain(void);
/* kc_sched_drain with a bound: KC_ETIME if still busy after timeout_ns; KC_EINVAL and
 * KC_ESHUTDOWN as drain. */
int32_t kc_sched_drain_for(uint64_t timeout_ns);
/* Stops and joins the workers, frees every stack (KC_SHUTDOWN_*). A second call does nothing.
 * Before it unmaps the stacks it waits for wakes of its coroutines under way on other threads
 * (a channel operation's, a token cancel's); a later wake of one of them does nothing. With no
 * host counted (kc_lib_release's 0, or none ever retained) it also ends and joins the counters'
 * clock ticker (kc_clock_now), and ends the metrics pipes whose channels are gone, joining their
 * thread once no pipe is left, and joins the threads that free rings for undelivered hooks
 * (kc_ring_destroy) once their frees are done, also when no scheduler ran: no thread of the
 * library's own outlives its last host (the next use of the clock or a new pipe starts one
 * again). */
int32_t kc_sched_shutdown(uint32_t mode);
/* kc_sched_shutdown of the scheduler of one generation (kc_sched_info's seventh value, not 0:
 * KC_EINVAL) only: once that one is shut down and a later one started, even by another thread
 * while this call runs, it does nothing to the later one (with no host counted, the clock ticker
 * and the metrics pipes whose channels are gone end as with kc_sched_shutdown). While another
 * shutdown still joins that generation (its run stopped, a worker on a coroutine that still runs)
 * it waits for that join, as kc_sched_shutdown does: once it returns 0, kc_sched_abandoned knows
 * the count (before, it returned 0 at once, the join still going on). A generation not started
 * yet is KC_EINVAL, nothing done, as kc_sched_ended answers for it (before, 0). */
int32_t kc_sched_shutdown_gen(uint32_t mode, uint64_t generation);
/* kc_sched_shutdown with a bound of timeout_ns on all of its waits together (one deadline,
 * timeout_ns from the call): a wait for another shutdown in progress, a KC_SHUTDOWN_FINISH's drain
 * (until shortly before the deadline, leaving the join a quarter of the time left, at most 100 ms;
 * past it the rest is abandoned, as a cancel would, and kc_sched_ended says cancelled), then the
 * join of the workers. Its results, and what the next call does after each:
 * 0: stopped, joined, everything freed (or none ran), and what an abandon left for after its locks
 *   (below) done, an earlier timed call's too; a next shutdown does nothing, kc_sched_start
 *   starts afresh.
 * KC_ETIME: stopped (not running for kc_sched_info, its outcome known to kc_sched_ended, spawns,
 *   drains and kc_sched_start KC_ESHUTDOWN, kc_sched_abandoned KC_EBUSY) but the join not done, at
 *   one of these stages: (a) a worker did not stop in time (it runs a coroutine that never yields,
 *   which nothing can stop from outside): nothing joined or freed, since that worker still runs on
 *   its coroutine's stack; (b) the workers joined but a kc_coro_unpark's wake or a
 *   kc_sched_drain(_for) of another thread still inside: nothing freed (that call reads it);
 *   (c) the coroutines abandoned (their cleanups and on_done ran) and everything freed but the
 *   stacks, which a kc_coro_unpark/_state/_transfer lookup of another thread that found a
 *   coroutine before the join still reads; (d) the workers joined and everything freed but the
 *   stacks, the abandoned coroutines' cleanups still running on a thread of the library's own (one
 *   waits for the lock of a channel its waiter is queued on, which a stuck undelivered hook's
 *   caller holds: waited for until the deadline, at least 10 ms from that thread's start; it ends
 *   once the lock is let go). What the join would free stays allocated until then
 *   (leaked on purpose, never freed under a running worker). A drain of another thread asleep
 *   returns KC_ESHUTDOWN as the run stops; a kc_scope_wait/_watch on a thread whose children the
 *   join would abandon returns KC_ESHUTDOWN once the call gives up at (a), (b) or (d). The next
 *   kc_sched_shutdown, kc_sched_shutdown_gen (of that generation; an earlier one's does nothing)
 *   or kc_sched_shutdown_timed, in either mode, goes on from that stage and frees everything once
 *   done (the first two with no bound: at (a) and (d) for as long as that coroutine or hook runs,
 *   for good if it never ends); then kc_sched_abandoned knows the count and kc_sched_start runs
 *   again. Also KC_ETIME if another shutdown (kc_sched_shutdown, _gen, a _timed one's next call)
 *   still drains or joins when the bound passes: the wait for it is bounded too, and it goes on (a
 *   cancel ends a finishing one's drain first, as kc_sched_shutdown's does). (e) Also KC_ETIME with
 *   the scheduler shut down as after 0 (joined and freed, or none ran: kc_sched_abandoned knows the
 *   count, kc_sched_start runs) while what an abandon left for after its locks (below), this call's
 *   or an earlier timed one's, still runs on a thread of the library's own at the bound: the next
 *   shutdown waits for that thread (a timed one until its bound: KC_ETIME again while it runs).
 *   Before, 0, those on_done still to come.
 * KC_EBUSY: a short call of another thread (kc_spawn, kc_sched_info, a scope's create or launch)
 *   still inside at the bound: nothing stopped, the scheduler runs on with those calls from
 *   outside KC_ESHUTDOWN (kc_sched_info reads it not running, kc_sched_start is KC_ESHUTDOWN);
 *   the next shutdown of any kind goes on from there.
 * KC_EINVAL: mode not 0 or 1, or a call from a coroutine: nothing done.
 * What its abandon leaves for after its locks (abandoned actors' and producers' channels ended,
 * undelivered values given to the hooks, their on_done) runs on a thread of the library's own,
 * waited for until the deadline (at least 10 ms from its start): ending a channel takes its lock,
 * which a stuck undelivered hook's caller may hold. Past it the call returns (KC_ETIME, (e), if
 * joined) and that thread ends them once the lock is let go, then ends by itself. A later
 * kc_sched_shutdown or kc_sched_shutdown_timed (a kc_sched_shutdown_gen too, unless its
 * generation was shut down already) waits for that thread, a timed one until its deadline, so
 * that it returns with them done and their on_done called (one called from those hooks or
 * on_done, or from inside any undelivered hook, whose caller holds a channel's lock that thread
 * may wait for, does not wait for an earlier call's thread, nor answer (e) for it).
 * kc_sched_shutdown and kc_sched_shutdown_gen wait for it with no bound: for as long as that
 * hook runs, for good if it never returns (they return with every on_done called). To bound
 * that wait, call kc_sched_shutdown_timed instead (KC_ETIME while the thread runs; call it
 * again to wait on), or let the hook return first.
 * With no host counted, the clock ticker and the dead pipes end as with kc_sched_shutdown, also
 * on KC_ETIME (the workers it leaves running are the next shutdown's to join); of the threads
 * that free rings for undelivered hooks it joins those that end by its deadline, leaving any
 * still freeing (waiting for the lock of a channel whose hook still runs) to the next
 * kc_sched_shutdown or kc_ring_create (before, it joined them all with no bound: for as long as
 * that hook ran). For an exit that must not wait for good (the process may end with that worker
 * running). New in ABI 25. */
int32_t kc_sched_shutdown_timed(uint32_t mode, uint64_t timeout_ns);
/* How the scheduler of one generation (kc_sched_info's seventh value) ended: KC_SHUTDOWN_FINISH
 * if a finishing shutdown ran it dry (nothing runnable, running or sleeping left: what a drain
 * waits for), KC_SHUTDOWN_CANCEL if what had not finished was abandoned (a cancelling shutdown, or
 * one that cut a finishing shutdown's drain short). Known as soon as it stops counting as running
 * for that shutdown (a drain then returns KC_ESHUTDOWN), before the shutdown returns. KC_EBUSY
 * while it runs, also while a finishing shutdown still drains it; KC_EINVAL for 0, a generation
 * not started yet, or one that ended more than 64 generations ago. New in ABI 16 (before, a host
 * whose drain met another thread's shutdown could not tell a finish from a cancel). */
int32_t kc_sched_ended(uint64_t generation);
/* How many coroutines the shutdown of one generation's scheduler abandoned: those that never
 * finished, counted at its join (one running as it stopped that then ran to its end is not one).
 * After a finish whose drain ran dry, the parked ones (on a channel, in a scope's wait, on a park
 * of their own); after a cancel, every one unfinished. Capped at INT32_MAX. KC_EBUSY while it runs
 * or until its join is done (a kc_sched_shutdown_timed that timed out leaves it to the next
 * shutdown); KC_EINVAL as kc_sched_ended answers. New in ABI 26 (before, a finishing shutdown
 * abandoned its parked coroutines uncounted). */
int32_t kc_sched_abandoned(uint64_t generation);
/* Fills up to len of [workers, live coroutines, busy count, running 0/1, stack size, the
 * kc_sched_start flags it was started with, generation]; returns count. The first six are 0 when
 * none runs (also while one shuts down); the generation is how many schedulers the process has
 * started (the running or stopping one is the latest), to tell one from a later one. Live counts
 * this scheduler's coroutines not yet finished, handle or not: a built-in is counted out before it
 * writes its done cell, a native scope's child before its scope can be seen done, a C function's
 * coroutine just after its entry returns (kc_coro_stats' count of handles drops later). */
int32_t kc_sched_info(uint64_t *out, uint32_t len);
/* Fills up to len of [runs, steals, parks, queue depth] of one worker; returns count. */
int32_t kc_sched_stats(uint32_t worker, uint64_t *out, uint32_t len);
/* Address of `symbol` in `library` (dlopen'd, kept loaded), or NULL (never fails). */
const void *kc_resolve(const char *library, const char *symbol);

/* Cancellation tokens: an operation given a token fails with KC_EINTR once it is cancelled (at
 * once if it already was), leaving the channel as it found it. */
int32_t kc_token_create(uint32_t *out_handle);
/* 1 the first time, 0 after. Wakes every operation waiting with the token. */
int32_t kc_token_cancel(uint32_t token);
/* 1 if cancelled, else 0. */
int32_t kc_token_is_cancelled(uint32_t token);
/* The handle dies at once; the token is freed when no operation uses it. Does not cancel. */
int32_t kc_token_destroy(uint32_t token);

/* Channels: fixed-size elements copied in and out. `size` must equal the element size. */
#define KC_CHAN_UNLIMITED 0xFFFFFFFFu /* capacity: grows without bound */
#define KC_CHAN_CONFLATED (1u << 0)   /* kc_chan_create flag: capacity 1, keeps the latest */
#define KC_CHAN_ZERO_COPY (1u << 1)   /* kc_chan_create flag: carries struct kc_desc (size 32) */
#define KC_CHAN_NO_METRICS (1u << 2)  /* kc_chan_create flag: no counters (to measure their cost) */
/* kc_chan_create flags, bits 8..15: an 8-bit tag saying what the values are, opaque to kcoro and
 * reported by kc_chan_info, so that whoever opens the channel by handle can refuse values of
 * another type of the same size. 0 = untyped. The TypeScript codecs use 1..6 (f64, u64, bytes,
 * string, structured, default) and refuse to open a channel tagged for another codec. */
#define KC_CHAN_TYPE(t) (((uint32_t)(t) & 0xFFu) << 8)
#define KC_CHAN_TRY (1u << 0)         /* kc_chan_send/recv flag: never wait (KC_EAGAIN) */
#define KC_CHAN_CLOSE_CANCEL (1u << 0) /* kc_chan_close_cause flag: cancel instead of close */
#define KC_OVERFLOW_SUSPEND 0
#define KC_OVERFLOW_DROP_OLDEST 1
#define KC_OVERFLOW_DROP_LATEST 2

/* What a zero-copy channel carries: the buffer moves with the descriptor. After a successful send
 * the sender must not touch it; the receiver owns it. A buffer the channel drops (cancel, destroy,
 * a drop policy) goes to `release(ctx, ptr, len)`, or to the channel's undelivered hook if NULL. */
typedef void (*kc_release_fn)(void *ctx, void *ptr, size_t len);
struct kc_desc {
  void *ptr;
  size_t len;
  kc_release_fn release;
  void *ctx;
};
/* Creates a channel. capacity 0 = rendezvous (+ a drop policy = a 1-slot buffer). With
 * KC_CHAN_ZERO_COPY, elem_size is 0 or sizeof(struct kc_desc); otherwise 1 .. 1 MiB (KC_EINVAL).
 * KC_CHAN_CONFLATED makes it 1 slot whatever capacity says, and drop-oldest: overflow
 * KC_OVERFLOW_SUSPEND (0, the default) or KC_OVERFLOW_DROP_OLDEST; KC_OVERFLOW_DROP_LATEST
 * contradicts it (KC_EINVAL). KC_EINVAL for a capacity above 2^31 (but KC_CHAN_UNLIMITED): no
 * power-of-two buffer holds it. A buffer of more than 1 MiB starts at 1 MiB and doubles as it
 * fills, as an unlimited one does (a send may then find no memory, as there). */
int32_t kc_chan_create(uint32_t elem_size, uint32_t capacity, uint32_t overflow, uint32_t flags,
                       uint32_t *out_handle);
/* Sends *elem. deadline_ns 0 = none (kc_now_ns clock); token 0 = none. KC_EPIPE closed,
 * KC_ECANCELED cancelled, KC_ETIME deadline, KC_EINTR token cancelled, KC_EAGAIN with
 * KC_CHAN_TRY when it would wait. From a scheduled coroutine it parks; from a plain thread it
 * blocks; a hand-driven coroutine parks until resumed, and with a deadline (its own or its
 * scope's) that it would have to wait for, gets KC_EINVAL (no timer can end its wait).
 * The token against a close or cancel: a `token` cancelled (kc_token_cancel) before the call
 * returns makes it return KC_EINTR instead of KC_EPIPE, and a receive's KC_ECANCELED, whichever
 * came first, as kc_select. Only what moved wins over it: 0, the value sent or received (it
 * cannot be taken back), and a send's KC_ECANCELED (a cancel that fails a waiting send drops its
 * value to its release or the undelivered hook: no longer the caller's). (Earlier builds
 * returned either, by the timing of the wake-up, when the token woke a receive as its channel
 * closed.) A scope's cancellation only ends a wait: a close that came first wins.
 * Whose value after a failed send: KC_EPIPE, KC_ETIME, KC_EINTR and KC_EAGAIN took nothing (a
 * close never fails a waiting send): the value is still the caller's. KC_ECANCELED means either:
 * a send that found the channel cancelled took nothing (the caller's, as every KC_CHAN_TRY send,
 * kc_chan_try_send, kc_chan_retry_send and kc_chan_try_send_n); one a cancel failed while it
 * waited had its value dropped as a buffered one is (the descriptor's release, else the
 * undelivered hook or kc_chan_keep_undelivered's list): no longer the caller's. The status does not
 * tell them apart; the drop does: it runs under the channel's lock before the send returns, and
 * only for a value it took. So a zero-copy caller that must free its own buffer gives the
 * descriptor a release that frees it (or notes in ctx that it ran), and after KC_ECANCELED frees
 * the buffer only if release did not run. kc_chan_send_async tells them apart by where the status
 * comes: returned at once (found cancelled: the caller's) or in a ring record (dropped). */
int32_t kc_chan_send(uint32_t handle, const void *elem, uint32_t size, uint64_t deadline_ns,
                     uint32_t token, uint32_t flags);
/* Receives into *out; as kc_chan_send. */
int32_t kc_chan_recv(uint32_t handle, void *out, uint32_t size, uint64_t deadline_ns,
                     uint32_t token, uint32_t flags);
/* kc_chan_send / kc_chan_recv with KC_CHAN_TRY, no deadline and no token: 0 or KC_EAGAIN,
 * KC_EPIPE, KC_ECANCELED. No 64-bit argument, so FFI callers (Deno) take their fast path. */
int32_t kc_chan_try_send(uint32_t handle, const void *elem, uint32_t size);
int32_t kc_chan_try_recv(uint32_t handle, void *out, uint32_t size);
/* kc_chan_try_send for a host retrying a send whose first try already counted its "full"
 * failure (a TypeScript send waiting in JavaScript): the same outcomes, but a full channel counts
 * no failure, so one send counts one however often it retries. New in ABI 16 (before, each
 * retry's kc_chan_try_send counted one more). */
int32_t kc_chan_retry_send(uint32_t handle, const void *elem, uint32_t size);
/* Up to max try-receives in one call into consecutive size-byte elements of out: how many it
 * received (0: none could be); an error (KC_EPIPE, KC_ECANCELED, KC_EBADH, KC_EINVAL) only when it
 * received none. max 0, or above INT32_MAX (the count would not fit), is KC_EINVAL. */
int32_t kc_chan_try_recv_n(uint32_t h, void *out, uint32_t size, uint32_t max);
/* Try-sends the n consecutive size-byte elements of elems in order until one would wait: how many
 * it sent (0: none could be); an error (KC_EPIPE, KC_ECANCELED, KC_EBADH, KC_EINVAL) only when it
 * sent none. n 0, or above INT32_MAX, is KC_EINVAL. */
int32_t kc_chan_try_send_n(uint32_t h, const void *elems, uint32_t size, uint32_t n);
/* As kc_chan_try_send / kc_chan_try_recv, for a caller holding the handle word that
 * kc_chan_ready_flag gave for this handle: no handle-table lookup (about 5 ns less per call).
 * handle_word must come from kc_chan_ready_flag of this library; a handle that died since gives
 * KC_EBADH, and so does the word of another channel (it holds another handle). The pointer itself
 * is not checked, beyond NULL (KC_EINVAL): any other (computed, from another copy of the library,
 * into your own memory) is read as the channel table's entry around it, which is undefined
 * behaviour (a crash, or an operation on whatever memory it lands in), as with a forged pointer
 * anywhere; the same holds for a non-NULL handle_word of kc_chan_try_send_copy (whose NULL is no
 * error: a send by the handle alone). */
int32_t kc_chan_try_send_at(const uint32_t *handle_word, uint32_t handle, const void *elem,
                            uint32_t size);
int32_t kc_chan_try_recv_at(const uint32_t *handle_word, uint32_t handle, void *out,
                            uint32_t size);
/* kc_desc_make(data, len, tag, desc) and a try-send of *desc (kc_chan_try_send_at, or
 * kc_chan_try_send with handle_word NULL) in one call: one FFI transition per value for a host
 * streaming buffers. A failed try-send (KC_EAGAIN, KC_EPIPE, ...) leaves the made descriptor in
 * *desc, its buffer the caller's (free it with kc_desc_free, or keep it for another try).
 * KC_ENOMEM with desc->ptr NULL: no buffer could be made, nothing was sent. KC_EINVAL for len 0
 * (send an empty value as the descriptor kc_desc_make of 0 bytes writes, {NULL, 0, NULL, tag},
 * with kc_chan_try_send) or NULL data, with desc->ptr NULL: nothing made (before, *desc was left
 * as it was: a caller freeing what a failure left freed a stale pointer); or NULL desc. A
 * KC_EINVAL of the try-send (a channel of another element size, a call from the channel's own
 * undelivered hook: see kc_chan_on_undelivered) leaves the copy, as any failed
 * try-send. So after every error but NULL desc, kc_desc_free(desc) frees exactly what the call
 * made. New in ABI 17. */
int32_t kc_chan_try_send_copy(const uint32_t *handle_word, uint32_t handle, const void *data,
                              uint32_t len, uint32_t tag, struct kc_desc *desc);
/* The channel's "a receive may succeed now" byte, and (handle_word not NULL) the word holding
 * handle while it lives; NULL for a bad handle. The byte is 0 only if the channel was empty
 * (nothing buffered, no sender waiting, open) at some moment since; it may stay nonzero after a
 * receive emptied it. Reading 0 from the byte, then handle from the word (both acquire) answers
 * a try-receive with KC_EAGAIN without a call: the channel really was empty then. Both stay
 * readable while the library is loaded (channel memory is type-stable). */
const uint8_t *kc_chan_ready_flag(uint32_t handle, const uint32_t **handle_word);
/* The channel's "a send would wait" byte; NULL for a bad handle. It is nonzero only if a send
 * would have waited (full, or rendezvous with no receiver waiting; open; policy suspend) at some
 * moment since; it may stay 0 after a send filled the buffer. Reading nonzero, then the handle
 * word, answers a try-send with KC_EAGAIN without a call. */
const uint8_t *kc_chan_blocked_flag(uint32_t handle);
/* The channel's "a receiver is queued" byte; NULL for a bad handle. Nonzero only if a receiver
 * (a receive or a select's receive clause, of any thread, coroutine or ring) was queued on the
 * channel at some moment since, 0 only if none was. Read it, then the handle word (both
 * acquire), as the ready byte. Once this was called, a coroutine's select that completes
 * unlinks its losing receive clause here, so that clause does not keep the byte set. New in
 * ABI 22. */
const uint8_t *kc_chan_waiting_flag(uint32_t handle);
/* Sets (NULL clears) the hook given every value the channel drops. It runs with the channel
 * locked, so a call on the channel from the hook would take the lock this thread holds: every
 * such call is refused with KC_EINVAL, nothing done, for the hook's thread to make once the hook
 * returned (before, a hang in that call, or, after a run of the thread's own operations on the
 * channel, a try-send or try-receive that went through in the middle of the operation that
 * dropped). Refused: the try family (kc_chan_try_send, _try_recv, _retry_send, _try_send_n,
 * _try_recv_n, _try_send_at, _try_recv_at, _try_send_copy), kc_chan_send and kc_chan_recv (with
 * KC_CHAN_TRY too), kc_select and kc_select_async with a clause on it, kc_chan_send_async,
 * kc_chan_recv_async, kc_ring_watch, kc_chan_close, _close_cause, _cancel, _destroy, _unhold
 * (the hold kept), _drop, _status, _snapshot, _add_metrics, _on_undelivered, _keep_undelivered,
 * _free_undelivered; and through a ring: a kc_ring_take, _give_back, _abort or _withdraw of a
 * ticket of an operation on this channel, or a kc_ring_destroy of a ring holding one (queued, or
 * completed and not taken yet), the ticket (the ring) kept. Also from a hook run inside this one
 * (of another channel that this hook dropped a value on): both channels are locked. Calls that
 * take no lock (kc_chan_info, _serial, _cause, _cancel_cause, _ready_flag, _blocked_flag,
 * _waiting_flag, _hold, _take_undelivered) work. Other channels are the hook's to use. Other
 * threads' try-operations that would wait (a try-send the blocked byte says is full, a try-receive
 * the ready byte says is empty) answer KC_EAGAIN at once while the hook runs; so do the _at
 * calls (and _copy given a handle word), which read no byte (their caller reads it first), when
 * they find the lock held by the hook and the byte says so, and a kc_select with KC_SELECT_POLL
 * counts a clause on the channel whose byte says it would wait as not ready, without its lock
 * (before, both waited for the hook's end); a kc_chan_cancel that drops several values (a hook
 * each, in one hold of the lock) keeps that so from its first hook to its last, between two
 * hooks too. The rest wait for the lock. On the hook's own thread such a byte-read answer is
 * "would wait" too, while the calls are refused. The same holds for a descriptor's release.
 * Zero-copy: elem is a struct kc_desc without a release.
 * It must return on the thread and coroutine it was called on: run in a coroutine, it must not
 * suspend it (kc_coro_yield, or a call that parks: a blocking channel operation, kc_sleep_ns),
 * which would keep the channel locked while others run, and leave the mark of the hook that the
 * refusals above read with the thread (it is the thread's, not the coroutine's): the thread's
 * later ring calls misjudged, or a read of a stack gone. Undefined; a debug build asserts.
 * It (and a descriptor's release) may create, resume and destroy hand-driven coroutines, but not
 * resume or destroy one waiting on this channel (a send, receive or select of it): that coroutine
 * takes the channel's lock as it goes on or gives its wait up, which this thread holds. For the
 * same reason kc_sched_shutdown and kc_sched_shutdown_gen from it wait for this thread, for good,
 * while the scheduler has a coroutine waiting on this channel (its abandon unlinks it under this
 * lock) or a producer or actor whose end ends this channel (kc_produce's channel, an actor's
 * mailbox: that end takes this lock on the shutdown's thread). Call kc_sched_shutdown_timed there
 * instead: KC_ETIME at its bound (stage (d), or (e) joined and freed), those steps done on a
 * thread of the library's own once the hook returned, and the next shutdown waits for them; or
 * shut down once the hook returned. A value a sender handed to a kc_chan_recv or a kc_select
 * receive clause whose coroutine a shutdown (or kc_coro_destroy) then abandons, before the call
 * returned it, comes here too (or to the descriptor's release), once, counted dropped: from a
 * shutdown on its thread after it let go of the scheduler, before kc_sched_shutdown returns (a
 * kc_sched_shutdown_timed's: see there). Before, it was lost. */
typedef void (*kc_undelivered_fn)(void *ctx, const void *elem);
int32_t kc_chan_on_undelivered(uint32_t handle, kc_undelivered_fn hook, void *ctx);
/* Closes: 1 the first time, 0 after. Buffered values stay receivable. (ABI 14 returned 0 also to
 * the first close when more than 64 receivers waited.) */
int32_t kc_chan_close(uint32_t handle);
/* Closes, drops buffered values, fails every waiter with KC_ECANCELED. Returns 0, also when it
 * was closed or cancelled already (unlike kc_chan_close, it does not tell the first call). */
int32_t kc_chan_cancel(uint32_t handle);
/* kc_chan_close (flags 0) or kc_chan_cancel (KC_CHAN_CLOSE_CANCEL) that, when this call is the
 * one that closes the channel, keeps a copy of len bytes at cause (len 0: none) for every host of
 * the channel until it is destroyed: 1 if this call closed it, 0 if it was closed already (a
 * cancel then cancels it all the same, as kc_chan_cancel does). The TypeScript module stores its
 * close causes this way (an encoding of its own). A cancel that is the channel's first cancel
 * keeps its cause for kc_chan_cancel_cause, also when a close came before it (the close cause
 * stays the first closer's; ABI 22 kept no cause of a cancel that found the channel closed).
 * KC_EINVAL (flags other than KC_CHAN_CLOSE_CANCEL, cause NULL with len not 0, or len above
 * INT32_MAX, a length kc_chan_cause could not return: before, such a cause was kept and every read
 * of it was KC_EINVAL) and KC_EBADH: nothing done. KC_ENOMEM (only with len not 0): the cause
 * could not be copied, and the close or cancel stands all the same (made first, not undone;
 * whether this call was the one that closed the channel is not told): the channel is closed, or
 * cancelled (buffered values dropped, waiters failed with KC_ECANCELED, kc_chan_status bit 3
 * where a close came first), only without this cause. kc_chan_cause then reads 0 where this call
 * closed the channel, and kc_chan_cancel_cause 0 where it was the first cancel, for good: no
 * later call's cause takes its place. */
int32_t kc_chan_close_cause(uint32_t handle, const void *cause, uint32_t len, uint32_t flags);
/* The close cause's length, copying up to cap bytes of it into out; 0 if none; KC_EBADH once
 * the channel is destroyed. */
int32_t kc_chan_cause(uint32_t handle, void *out, uint32_t cap);
/* The cause of the channel's first cancel (kc_chan_close_cause with KC_CHAN_CLOSE_CANCEL), as
 * kc_chan_cause reads the close cause: its length, copying up to cap bytes of it into out; 0 if
 * none (not cancelled, cancelled without one or by kc_chan_cancel, or a later cancel gave it:
 * the first cancel wins). Where that cancel closed the channel it is the close cause too; where
 * a close came first (kc_chan_status bit 3) it is the cancel's own, so that the host feeding the
 * channel (a producer) learns what its consumer in another isolate cancelled with. KC_EBADH once
 * the channel is destroyed, which frees it. New in ABI 23. */
int32_t kc_chan_cancel_cause(uint32_t handle, void *out, uint32_t cap);
/* Cancels the channel (sealing a kc_chan_keep_undelivered list) and kills its handle, then frees
 * it once no call uses it. The cancel comes before the handle dies, also in the last
 * kc_chan_unhold that destroys a channel: a call that finds the handle dead (KC_EBADH) finds what
 * the cancel dropped in its kept list already (the last unhold frees a list that is not a later
 * keeper's: see kc_chan_hold). 0, or KC_EBADH for a dead handle: of two racing destroys (or a
 * destroy and the last kc_chan_unhold) one kills it, and the other returns KC_EBADH (the channel
 * cancelled and sealed all the same: its values are in the kept list). A kept list that is still
 * the calling thread's (its kc_chan_keep_undelivered call the latest) stays for its take after
 * either answer; what it does not take is freed when the thread ends. Nothing else of the channel
 * stays bound to the thread, also after a KC_EBADH for a handle dead before the call. */
int32_t kc_chan_destroy(uint32_t handle);
/* One more holder of the channel on the calling thread (a JavaScript isolate's Channel object).
 * A channel that was ever held is destroyed when its last hold is given back (kc_chan_unhold, or
 * the holding thread ending), unless a hold was taken with KC_CHAN_HOLD_FOREVER (its handle went
 * to code that does not count itself). The values it kept for kc_chan_take_undelivered are freed
 * then (zero-copy buffers with kc_buf_free): the holders' leaving means its creator is gone. Not
 * when the thread giving back the last hold called kc_chan_keep_undelivered on it and a later call
 * on another host thread made the list that caller's: it stays for that caller's take (its
 * thread's end frees it).
 * KC_EINVAL from a coroutine or a worker's thread unless KC_CHAN_HOLD_FOREVER: a worker's thread
 * ends at kc_sched_shutdown, which would give the hold back for it. */
#define KC_CHAN_HOLD_FOREVER 1u
int32_t kc_chan_hold(uint32_t h, uint32_t flags);
/* Gives back a hold this thread took: 1 if it was the last and destroyed the channel (cancelled
 * and sealed before its handle dies, as kc_chan_destroy does), 0 if holders remain, KC_EINVAL if
 * this thread holds none of h, KC_EBADH if the channel is gone already (the hold is forgotten all
 * the same). */
int32_t kc_chan_unhold(uint32_t h);
/* Bit 0: closed for send; bit 1: closed for receive (closed and drained); bit 2: cancelled by the
 * going away of the ring of a KC_WATCH_OWNED watch on it (kc_ring_watch; ABI 21); bit 3:
 * cancelled after a close (the close came first, then the first cancel: kc_chan_cancel_cause
 * has that cancel's cause, if it gave one; ABI 22 had no bit 3); bit 4: cancelled, by any cancel
 * (kc_chan_cancel, kc_chan_close_cause with KC_CHAN_CLOSE_CANCEL, a destroy's, bit 2's), so that a
 * closed channel's cancel is told from its close (from ABI 24 on: ABI 23 and before leave bit 4
 * clear, a cancelled channel reading as closed and drained, 3). Read at one moment: bits 1 to 4
 * come only with bit 0, bits 2 and 3 with bit 4. */
int32_t kc_chan_status(uint32_t handle);
/* What the channel was created as, in 4 words at out: element size, capacity as normalised (1
 * for a conflated channel, KC_CHAN_UNLIMITED for unlimited), overflow policy, and the flags
 * KC_CHAN_ZERO_COPY, KC_CHAN_NO_METRICS and KC_CHAN_TYPE(t) it was created with. 0, or KC_EBADH /
 * KC_EINVAL (out NULL). */
int32_t kc_chan_info(uint32_t handle, uint32_t *out);
/* The serial of the channel the handle names now: 1 and up, never the same for two channels of
 * the process (a 64-bit count, never 0), whereas a handle's value comes back for a later channel
 * once its slot's generation wraps (after ~523,000 frees). A host that read it while it knew the
 * channel (its kc_chan_create, a hold) tells that channel apart from a later one at the same
 * value, also one of the same kc_chan_info. 0, or KC_EBADH for a dead handle / KC_EINVAL (out
 * NULL). New in ABI 23. */
int32_t kc_chan_serial(uint32_t handle, uint64_t *out);
/* A channel's counters, in the order kc_chan_snapshot writes them. failed_full: a try-send that
 * found no room (a blocking send that waits counts none). The other failures count one per failed
 * operation, a kc_select's on the completed clause's channel: failed_closed each KC_EPIPE and
 * failed_cancelled each KC_ECANCELED, whether the operation found the channel so or a close or
 * cancel failed its wait (a wait a close ended used to count none, and one that found the channel
 * cancelled counted failed_closed); failed_timeout each KC_ETIME; failed_cancelled also each wait
 * its token gave up (KC_EINTR) and each withdrawn ring operation. A wait that a close or cancel
 * failed keeps that count where its token then makes it KC_EINTR. */
struct kc_chan_metrics {
  uint64_t sends, receives, bytes_sent, bytes_received;
  uint64_t failed_full, failed_closed, failed_timeout, failed_cancelled, dropped;
  uint64_t first_op_ns, last_op_ns, taken_ns;
  uint64_t handoffs; /* values passed from a waiting party straight to the other */
};
/* Fills up to len words of a struct kc_chan_metrics (13 for all); returns count. out may be NULL
 * when len is 0 (nothing written), as for kc_coro_stats, kc_sched_info, kc_sched_stats and
 * kc_ring_drain; before, each of them refused it with KC_EINVAL. */
int32_t kc_chan_snapshot(uint32_t handle, uint64_t *out, uint32_t len);
/* Adds operations completed outside the channel to its counters, so that every snapshot sees
 * them: a host that hands values between its own waiters, or answers "full" from the blocked
 * flag, without a call (the TypeScript binding reports those, and a channel's history from
 * before it was native, once per event-loop turn). counts: n words (up to 13 read, the rest 0)
 * laid out as struct kc_chan_metrics; counts add, saturating at 2^63 - 1 (they wrapped before;
 * the headroom keeps the channel's own counting above it from wrapping), first_op_ns keeps the
 * earliest and last_op_ns the latest (0 = none), taken_ns is ignored. A copying channel's bytes
 * follow from its counts, so only a zero-copy one adds bytes_sent/bytes_received; a
 * KC_CHAN_NO_METRICS channel adds only the failures and dropped. 0, or KC_EBADH / KC_EINVAL (counts
 * NULL with n > 0). */
int32_t kc_chan_add_metrics(uint32_t handle, const uint64_t *counts, uint32_t n);
/* A metrics pipe: every interval_ns (>= 1 ms) a snapshot of `source` is try-sent into `target`,
 * whose element size must be sizeof(struct kc_chan_metrics) (a full target skips one; make it
 * conflated to keep the latest). Ends when target is closed, a channel is destroyed (noticed at
 * its next tick, or at once by a kc_sched_shutdown with no host counted), or on stop. One thread
 * serves all pipes while any runs. A tick that runs past the next one's due time drops the ticks
 * it missed: the next comes interval_ns after its end (before, at once: two snapshots back to
 * back). */
int32_t kc_chan_pipe_metrics(uint32_t source, uint32_t target, uint64_t interval_ns,
                             uint32_t *out_id);
/* 0, or KC_EBADH if the pipe ended already. If its tick runs, waits for that tick's end, at
 * which the pipe ends: no snapshot of it comes after (a second stop meanwhile waits too, and
 * answers KC_EBADH: the first one ended it). From inside an undelivered hook or a dropped
 * descriptor's release (the target's hook, which a conflated target's send runs in that tick;
 * or any other, whose caller holds a channel lock the tick may wait for), returns at once: the
 * pipe ends once that tick returns (the tick may still push its snapshot). */
int32_t kc_chan_pipe_stop(uint32_t id);
/* Per-second rates between two full snapshots (13 words each, earlier first): writes 6 doubles,
 * out[0] to out[5] = sends, receives, bytes sent, bytes received, failures, dropped (out must
 * hold 6). KC_EINVAL if `later` is not later. */
int32_t kc_chan_compute_rate(const uint64_t *earlier, const uint64_t *later, double *out);

/* Native buffers for zero-copy channels driven from a garbage-collected language: kc_desc_make
 * copies len bytes into a new buffer and writes {buffer, len, NULL, (void *)tag} to *out (len 0:
 * no buffer, ptr NULL); the receiver frees the buffer with kc_buf_free (NULL: nothing). A
 * descriptor with a NULL ptr counts 0 bytes in the metrics. The TypeScript codecs read the tag:
 * KC_TAG_STRING (UTF-8) for codecs.string, KC_TAG_BYTES for codecs.bytes (both also for the
 * default codec); a value under another tag is a CodecError there.
 *
 * What TypeScript sends on a shared zero-copy channel (its codecs; release is always NULL), by
 * one rule: ptr/len are the bytes, ctx is the tag; a NULL ptr has no bytes.
 *   {buffer, len, NULL, tag}   len > 0 bytes at buffer. KC_TAG_STRING: a string's UTF-8 bytes
 *                              (codecs.string, the default codec's strings; no NUL after them).
 *                              KC_TAG_BYTES: a Uint8Array's bytes (codecs.bytes, the default
 *                              codec's Uint8Arrays). KC_TAG_PACKED and KC_TAG_STRUCTURED:
 *                              codecs.structured's and the default codec's other values, in
 *                              encodings only TypeScript reads (src/pack.ts; node:v8's
 *                              serializer): opaque to C. Every one is freed with kc_desc_free.
 *   {NULL, 0, NULL, tag}       an empty string (KC_TAG_STRING) or bytes (KC_TAG_BYTES), as
 *                              kc_desc_make of 0 bytes writes it. Nothing to free.
 *   {NULL, kind, NULL, value}  kind 1..6: a value the default codec carries in the descriptor,
 *                              private to TypeScript: the len word is its kind, NOT a length, and
 *                              ctx is no tag: 1 a number (ctx: its IEEE-754 double's bits), 2 a
 *                              bigint (ctx: int64_t), 3 true, 4 false, 5 null, 6 undefined (ctx
 *                              0). Nothing to free. Only the default codec writes these.
 * So a C receiver of a codecs.string or codecs.bytes channel reads every value as d.ptr, d.len
 * (check d.ctx), and one of a default-codec channel first skips or refuses d.ptr == NULL with
 * d.len != 0. kc_desc_free is right for every form (a NULL ptr frees nothing). ABI 23: before, an
 * empty string or bytes came as {NULL, 7 or 8, NULL, ...} (a kind, read as 7 or 8 bytes at NULL)
 * and kinds 3..6 had whatever ctx the sender's slot held last. */
#define KC_TAG_STRING 16
#define KC_TAG_BYTES 17
#define KC_TAG_STRUCTURED 18 /* node:v8 serialized (TypeScript only) */
#define KC_TAG_PACKED 19     /* src/pack.ts's encoding (TypeScript only) */
/* kc_desc_make's KC_EINVAL (NULL out, or NULL data with len > 0) and KC_ENOMEM make nothing and
 * write out->ptr NULL (out given): kc_desc_free(out) after any failure frees nothing (before,
 * *out kept what it held), as after kc_chan_try_send_copy's. */
int32_t kc_desc_make(const void *data, uint32_t len, uint32_t tag, struct kc_desc *out);
/* Frees a buffer once, as free() does: a second free of it, or a pointer kc_desc_make did not
 * write (one inside a buffer, a buffer of your own), is undefined (a pooled buffer's chunk may be
 * reused under a live value; a malloc'd one aborts in the C library). The release build
 * (ReleaseFast, the default) does not detect it; a Debug or ReleaseSafe build of the library
 * aborts with a message at a second free of a pooled buffer, or at an address inside one; and
 * at a free that its chunk's count cannot hold: a buffer a host counted freed with
 * kc_pool_release and then freed (kc_pool_release names no buffer, so this shows at that free
 * only while no other buffer of the chunk is out, else at the free that runs the count over).
 * Such a build also lays out each carving of a pool chunk off the last three's (64-byte steps,
 * starting 0, 16, 32 or 48 bytes in, in turn), so a buffer freed after its chunk came back and
 * was carved again up to three times (freed twice, or kept while another buffer of the chunk
 * was returned twice) aborts too, where before it could free a live buffer of the new carving
 * silently; one from four carvings back may still meet a live buffer's address, which is all
 * this call gets. */
int32_t kc_buf_free(void *ptr);
/* kc_buf_free(d->ptr): frees the buffer a kc_desc_make descriptor names (KC_EINVAL: d NULL). It
 * does not clear d->ptr: a second kc_desc_free of the same descriptor (or of a copy) is a double
 * free, undefined as kc_buf_free says. */
int32_t kc_desc_free(const struct kc_desc *d);
/* The buffer pool that kc_desc_make takes buffers of up to 16 KiB from: out[0] the region's
 * address, out[1] its length, out[2] its chunk size, out[3] its chunks in use (KC_ENOMEM: no
 * pool, every buffer is malloc'd). A host may view a whole chunk at once and, when it lets go of
 * that view, count the buffers it viewed through it as freed with kc_pool_release(any address in
 * the chunk, count) instead of calling kc_buf_free for each. KC_EINVAL, nothing changed: outside
 * the pool or in a chunk never used, a count of 0 or more than a chunk holds, or more than a
 * retired chunk has out. */
int32_t kc_pool_info(uint64_t *out);
int32_t kc_pool_release(const void *chunk, uint32_t count);
/* The calling thread's table of view counts: one uint32_t per pool chunk (out[1] / out[2] of
 * kc_pool_info), zeroed when made, the same table for every call on the thread. A host that views
 * chunks adds to a chunk's entry the buffers it counts as viewed and takes off what it frees with
 * kc_pool_release; when the thread ends (a terminated Worker), what the table still counts is
 * freed for it. KC_ENOMEM: no pool, or no memory for the table. */
int32_t kc_pool_views(uint32_t **out);
/* Keeps every value the channel drops (cancel, destroy, drop policies; zero-copy: descriptors
 * without a release) in a list, replacing the kc_chan_on_undelivered hook; kc_chan_take_undelivered
 * moves the oldest kept value into out: 1, or 0 when none is left (works after destroy too). The
 * list is kept for the calling thread: when it ends, a channel that lives on stops keeping (a
 * zero-copy one frees what it drops, as with kc_chan_free_undelivered) and what it kept is freed,
 * a channel's destroyed meanwhile (by another thread) too (not so for a call from a coroutine:
 * kept until the channel ends). The destroy seals the list
 * once its cancel dropped what the channel held (ABI 22): take it after the destroy, and nothing
 * comes later (a late drop on another thread is refused, kc_chan_drop, or freed and counted,
 * kc_undelivered_lost). Called again, on any thread, the list (what it holds already too) is the
 * latest caller's: an earlier caller's thread that ends leaves it and the keeping alone; the
 * latest caller's end stops them as above (its call from a coroutine: none does). KC_ENOMEM if
 * the thread's record could not grow. KC_EBADH for a dead handle, also for one whose destroy
 * (another thread's, or its last hold given back) began after the call looked it up, whether or
 * not the channel kept its values before (kc_chan_destroy refuses the call from its start, before
 * its cancel, though its handle dies only after): nothing changes then, the list staying whose it
 * was, and nothing dropped later is kept for this call. */
int32_t kc_chan_keep_undelivered(uint32_t handle);
/* The exception to KC_EBADH for a dead handle: a destroyed channel's list is taken by its dead
 * handle, so a well-formed channel handle with nothing kept answers 0, also one never issued
 * (which generations a slot had is not remembered). KC_EBADH for a handle no channel could have
 * (another kind's, 0, generation or index 0; before, 0); KC_EINVAL for NULL out, or a size other
 * than the oldest kept value's (that value stays kept). */
int32_t kc_chan_take_undelivered(uint32_t handle, void *out, uint32_t size);
/* Frees the buffer of every descriptor the zero-copy channel drops without a release of its own
 * (as kc_buf_free does), wherever the drop happens, replacing the kc_chan_on_undelivered hook:
 * for a host whose dropped values need nothing but freeing. KC_EINVAL if not zero-copy. */
int32_t kc_chan_free_undelivered(uint32_t handle);
/* Hands the channel a value of its size that was meant for it and will never be sent (a host's
 * send that a cancel failed while it still waited in the host, before it was queued): it goes to
 * the undelivered path as a queued send's value would (a descriptor's own release, else the hook:
 * kc_chan_keep_undelivered's list, kc_chan_free_undelivered's freeing). 1 if taken; 0 if the
 * channel has no hook for it: counted as dropped either way, and after a 0 the value is still the
 * caller's, to free. KC_EBADH for a dead handle, KC_EINVAL for a NULL elem or a wrong size: nothing
 * counted, and the value is still the caller's. New in ABI 16 (before, a host that was not the
 * creator had to free such a value, and the creator's hook never saw it). KC_EBADH too (ABI 22)
 * when the call looked the channel up before another thread destroyed it and drops after the
 * destroy, on a channel that keeps its values (kc_chan_keep_undelivered): the destroy seals the
 * kept list, which its owner takes once after it, so the value stays the caller's instead of
 * waiting there unseen. */
int32_t kc_chan_drop(uint32_t handle, const void *elem, uint32_t size);
/* Values that channels keeping their dropped values (kc_chan_keep_undelivered) dropped after
 * their destroy sealed the list, in this process: a call on another thread that looked the
 * channel up before the destroy and dropped after it (an isolate's ring giving back a value it
 * had received and will not deliver, its isolate ended or its wait given up, or dropping one it
 * was sending). None can reach the owner, who takes the list
 * once after the destroy: each is freed (a zero-copy buffer too) and counted here. New in ABI 22
 * (before, such a value stayed in the list until a later channel got the handle's value). */
uint64_t kc_undelivered_lost(void);

/* Select: completes exactly one clause. */
#define KC_CLAUSE_SEND 0
#define KC_CLAUSE_RECV 1
#define KC_SELECT_POLL (1u << 0)     /* a default clause: KC_EAGAIN instead of waiting */
#define KC_SELECT_UNBIASED (1u << 1) /* probe in random order (Go) instead of clause order */
struct kc_clause {
  uint32_t handle;
  uint32_t kind; /* KC_CLAUSE_* */
  uint32_t size; /* must equal the channel's element size */
  uint32_t reserved;
  void *elem; /* send: the value; receive: where it goes */
};
/* Writes the completed clause's index to *out_index and returns 0, or KC_EPIPE / KC_ECANCELED if
 * that clause's channel is closed / cancelled; KC_EAGAIN (poll), KC_ETIME (deadline), KC_EINTR
 * (token). At most 16 clauses; the same channel may appear in several. KC_EINVAL in a hand-driven
 * coroutine that would wait with a deadline, as kc_chan_send.
 * The token against a close or cancel: a `token` cancelled (kc_token_cancel) before kc_select
 * returns makes it return KC_EINTR (*out_index not written) instead of KC_EPIPE / KC_ECANCELED,
 * whichever came first, the cancel or the channel's end. Only a clause that moved a value wins
 * over it: 0, the value sent or received (it cannot be taken back), and KC_ECANCELED for a send
 * clause (a cancel hands a waiting send's value to the undelivered path, as it does buffered
 * values: not the caller's any more). (Earlier builds returned either, by the timing of the
 * wake-up, when the token woke a select as its channel closed.) A scope's cancellation only ends
 * a wait: a clause that completes first, closed too, wins.
 * A send clause's value after KC_ECANCELED is as kc_chan_send's: the caller's if the select found
 * the channel cancelled, dropped (its release, else the hook or list) if a cancel failed the
 * clause while the select waited, told apart by whether that drop ran before kc_select returned;
 * every other clause's value, and every value after KC_EPIPE, KC_ETIME, KC_EINTR or KC_EAGAIN,
 * stays the caller's. kc_select_async: returned at once, the caller's; in a record, dropped. */
int32_t kc_select(const struct kc_clause *clauses, uint32_t n, uint64_t deadline_ns,
                  uint32_t token, uint32_t flags, uint32_t *out_index);

/* Native scopes: structured concurrency for native coroutines. A scope owns the coroutines
 * launched in it and every coroutine they kc_spawn; its children see its cancellation: a channel
 * operation, select or kc_sleep_ns that waits inside one fails with KC_EINTR once the scope (or
 * an ancestor) is cancelled, also one given a token of its own (either token ends the wait). */
typedef void (*kc_handler_fn)(void *ctx, const void *msg);
typedef void (*kc_done_fn)(void *ctx, int32_t status);
/* parent 0 = none; a child scope is cancelled with its parent. The scope belongs to the running
 * scheduler (kc_sched_info's generation). KC_ESHUTDOWN when none runs, or when `parent` belongs
 * to one shut down (ABI 14 made a child of such a parent on the later scheduler). KC_EBADH for a
 * dead or forged parent, also while no scheduler runs (before, KC_ESHUTDOWN then). */
int32_t kc_scope_create(uint32_t parent, uint32_t *out_scope);
/* kc_scope_create on the scheduler of one generation (kc_sched_info's seventh value, not 0:
 * KC_EINVAL) only: KC_ESHUTDOWN once that one is shut down, also when a later one runs, even one
 * a shutdown and restart by another thread started after the generation was read. New in ABI 16
 * (before, a host reading the generation and then calling kc_scope_create could make the scope on
 * the later scheduler). */
int32_t kc_scope_create_gen(uint32_t parent, uint32_t *out_scope, uint64_t generation);
/* As kc_spawn, as a child of the scope. KC_ECANCELED once the scope is cancelled; KC_ESHUTDOWN
 * once the scope's scheduler is shut down, also when a later one runs (after a restart, make a
 * new scope). ABI 14 refused only a scope whose children a shutdown had abandoned: one empty at
 * the shutdown took launches onto the later scheduler. KC_EBADH for a dead or forged scope, also
 * while no scheduler runs (before, KC_ESHUTDOWN then); kc_actor_spawn and kc_produce too. */
int32_t kc_scope_launch(uint32_t scope, kc_entry_fn entry, void *arg, uint32_t flags,
                        uint32_t *out_handle);
/* 1 the first time, 0 after. */
int32_t kc_scope_cancel(uint32_t scope);
/* Children not yet finished, those of the scopes below it (its descendants) included. */
int32_t kc_scope_live(uint32_t scope);
/* Until every child, and every child of a scope below it, has finished (0) or deadline_ns
 * (KC_ETIME; 0 = none). A coroutine parks, a thread blocks. KC_ESHUTDOWN once a shutdown
 * abandoned children of it (for good: they never finish; after a restart, make a new scope), and
 * on a thread as soon as a kc_sched_shutdown_timed gives up on its join (KC_ETIME), which leaves
 * them to the next shutdown's join. From a child of the scope (or of a scope below it), which would
 * wait for itself: KC_EINVAL at once; so too from a hand-driven coroutine that a scheduled one
 * resumed (it would block a scheduler worker's thread, its resumer perhaps a child: before, a
 * hang). */
int32_t kc_scope_wait(uint32_t scope, uint64_t deadline_ns);
/* From a plain thread: until the scope is cancelled (KC_EINTR, reported first) or every child
 * has finished (0), or deadline_ns (KC_ETIME; 0 = none); KC_ESHUTDOWN as kc_scope_wait. For
 * owners outside the scheduler (a TypeScript scope) that must hear of a native cancellation.
 * KC_EINVAL from a coroutine or a scheduler worker's thread (it would block the worker), as
 * kc_ring_wait (before, a worker's thread outside a coroutine was let wait). */
int32_t kc_scope_watch(uint32_t scope, uint64_t deadline_ns);
/* Cancels; the handle dies at once, the scope is freed after its last child. */
int32_t kc_scope_destroy(uint32_t scope);
/* The calling thread holds the scope: when the thread ends, the scope is destroyed unless
 * destroyed first (kc_scope_destroy on this thread forgets the hold), as soon as no child of it
 * or of a scope below it is live: at once if none is, else when the last of them finishes (on
 * that child's thread). It is not cancelled: its children run to their end, as if the holder had
 * waited for them before destroying it. For a host whose own way of destroying it dies with the
 * thread (a JavaScript Worker's garbage collector). Holding it again is the same hold; a scope
 * held by two threads goes after the first one's end. KC_EBADH for a dead handle, KC_EINVAL
 * from a coroutine or a scheduler worker's thread, KC_ENOMEM. New in ABI 18. */
int32_t kc_scope_hold(uint32_t scope);
/* Inside a scope's coroutine: 1 once the scope is cancelled, else 0 (for loops that never wait). */
int32_t kc_cancelled(void);
/* Children launched from now on into this scope or any scope below it (created before or after)
 * carry deadline_ns (kc_now_ns clock) in their context: a channel operation or select they start
 * without a deadline waits at most until then (KC_ETIME). An earlier deadline (a parent's, or a
 * child scope's own) is kept. Coroutines already running keep their context. Cancels nothing by
 * itself (cancel the scope for Kotlin's withTimeout). 0, KC_EBADH, KC_ENOMEM, or KC_EINVAL for
 * deadline_ns 0 or UINT64_MAX (reserved: the context's "no value" word), the latter where the
 * scope's context has no deadline yet (with one, that earlier deadline is kept and the call
 * answers 0). For no deadline, set none; for a far one, UINT64_MAX - 1 is the latest. */
int32_t kc_scope_set_deadline(uint32_t scope, uint64_t deadline_ns);
/* Inside a coroutine: its context's deadline, or 0. */
uint64_t kc_deadline(void);
/* Actors and producers fail as kc_scope_launch does (KC_ECANCELED, KC_ESHUTDOWN), and then
 * on_done is never called. Otherwise on_done runs exactly once. One a shutdown abandons (parked,
 * yielded, or not started) has its channel ended as its return would (an actor's mailbox
 * cancelled, a producer's channel closed), then on_done(ctx, KC_EINTR if its scope was cancelled
 * by then, else KC_ESHUTDOWN), by the shutdown's thread before kc_sched_shutdown returns (a
 * kc_sched_shutdown_timed's: on a thread of the library's own, which it waits for until its
 * deadline), after it let go of the scheduler (the channel's hooks and on_done may call
 * kc_sched_start). An actor abandoned with a message in hand (its handler parked, or a sender had
 * completed its receive) gives that message to the undelivered path first: each message is handled
 * (the handler returned, or took it: kc_actor_take) or given to the hook, once. The hook gets msg
 * as received, whatever the handler did with it: a handler that hands on what msg owns (stores
 * it, or sends it on: also a forwarding kc_chan_send that parks, which a receiver may have
 * taken) and may then park or yield must call kc_actor_take(ctx) first, or it is freed twice;
 * taken so, one whose forwarding send was never taken leaks at the shutdown instead (ABI 25
 * and before: mark it where the hook looks, the same ctx, and have the hook skip it). ABI 14
 * left that channel open. Before, an abandoned one's on_done never ran and its message in
 * hand was lost.
 * One abandoned in its own on_done (parked in it) is not called again, and its channel stays
 * as its return left it (a closed, emptied mailbox stays closed, not cancelled).
 * An actor: a child of `scope` calling handler(ctx, msg) for every message of `mailbox`; it
 * processes what is queued after close, then ends; it stops at once when the scope is cancelled,
 * also between queued messages. Ended any other way than by close, it cancels its mailbox (what
 * is queued goes to the undelivered hook, later sends fail with KC_ECANCELED): the actor owns its
 * mailbox, so give each actor a mailbox of its own. on_done(ctx, status) runs last: KC_EINTR
 * whenever the scope was cancelled by the time the actor finished, whatever ended its wait (a
 * close or a cancel of the mailbox too, before or after the scope's cancel: its mailbox is then
 * cancelled); else 0 (closed), KC_ECANCELED (mailbox cancelled or destroyed), KC_ETIME (the
 * scope's deadline, kc_scope_set_deadline, passed while it waited, or before its next message:
 * it stops between queued messages then, as at a cancel; before, an actor whose mailbox never
 * emptied ran on past it), KC_ESHUTDOWN (a cancelling shutdown met it at a turn, below),
 * KC_ENOMEM (no memory for its message buffer: it ran no handler). It yields to the scheduler
 * every 256 messages, before its next receive, so that what is queued behind it on its worker
 * runs, and stops there once a cancelling shutdown has begun (a finishing one's drain waits for
 * it until a cancel cuts it short): ended by return with nothing in hand, on_done KC_ESHUTDOWN
 * (KC_EINTR if the scope was cancelled by then), its mailbox cancelled (the undelivered hook
 * runs on the worker, before on_done); or, if its worker saw the shutdown first, abandoned at
 * the yield (as above: the hook and on_done run on the shutdown's thread). Before, an actor whose
 * mailbox never emptied never yielded: nothing queued behind it ran, and a shutdown never
 * returned. */
int32_t kc_actor_spawn(uint32_t scope, uint32_t mailbox, kc_handler_fn handler, void *ctx,
                       kc_done_fn on_done, uint32_t *out_handle);
/* Called by an actor's handler (with the ctx it was given): the message in hand is the
 * handler's now (stored elsewhere, or about to be sent on), so a shutdown that abandons the actor
 * before the handler returns does not give it to the mailbox's undelivered path. KC_OK;
 * KC_ENOTCORO outside a coroutine; KC_EINVAL from code that is not an actor's handler with that
 * ctx (a plain coroutine, a producer, the actor's on_done, the mailbox's hook that the actor's
 * own ending runs, another ctx). New in ABI 26. */
int32_t kc_actor_take(void *ctx);
/* A producer: a child of `scope` running entry(arg), which sends to `chan`; when it returns the
 * channel is closed, also when the scope was cancelled (what it sent stays receivable, as with
 * Kotlin's produce), then on_done(arg, status) runs with what ended it, the first that applies
 * when entry returned: KC_EINTR (scope cancelled), KC_ECANCELED (chan cancelled or destroyed),
 * KC_EPIPE (chan already closed, by entry itself or anyone else), else 0 (ABI 14 passed 0 for
 * all but KC_EINTR). out_handle as kc_spawn's (NULL: none; ABI 14 had no such parameter: code
 * built against it must be rebuilt). */
int32_t kc_produce(uint32_t scope, uint32_t chan, kc_entry_fn entry, void *arg, kc_done_fn on_done,
                   uint32_t *out_handle);

/* The bridge: completion rings for callers that cannot block (JavaScript). An operation that
 * must wait is queued with a ticket; whoever completes it appends a record to the ring and wakes
 * the ring's one waiter. */
struct kc_completion {
  uint32_t ticket;
  int32_t status;  /* 0, KC_EPIPE, KC_ECANCELED */
  uint32_t index;  /* select: the clause that fired */
  uint32_t reserved;
};
/* A ring is also destroyed when the thread that created it exits (a terminated Worker's isolate
 * thread): nothing is delivered to a dead isolate. A thread that holds channels (kc_chan_hold) or
 * hosts (kc_lib_retain_thread) destroys its rings first, and waits until each is freed (a call on
 * another thread that still uses one, a kc_ring_wait, returns at the destroy), before it gives
 * those back: a channel it alone held ends only once its rings' values are back in their
 * channels. The wait sleeps (it burns no CPU; the call that lets go last wakes it) and has no time
 * limit: a call on one of its rings in flight on another thread that runs a function of the
 * caller's (a kc_ring_take whose discarded value goes to an undelivered hook, a descriptor's
 * release) holds the thread's exit until that function returns, so such a function must not wait
 * for the ending thread (join it). That exit runs the library's code: the
 * first ring pins the library (a dlclose leaves it loaded until the process ends). */
int32_t kc_ring_create(uint32_t *out_ring);
/* The handle dies at once; pending operations are withdrawn; every kc_ring_wait blocked on it
 * returns (0), each of several on threads that share it too. Values received for it but not yet
 * taken go back to their channels, in front of the values sent after them, where
 * kc_ring_give_back puts them, counted as it counts them. KC_EINVAL, the ring kept, from inside
 * the undelivered hook of a channel one of its operations is on (see kc_chan_on_undelivered).
 * The withdrawal runs in whichever call lets go of the ring last: when another thread destroys
 * the ring while an undelivered hook (or a descriptor's release) is inside a call on it
 * (kc_ring_wait, _drain, _interrupt, a take or abort of another channel's ticket, a submission
 * on another channel), that call may be the last, and if one of the ring's operations is on the
 * hook's channel (or on the channel of a hook further out), whose lock that thread holds, the
 * withdrawal goes to a thread of the library's own, which takes the lock once the hook's caller
 * let go of it (before, the hook's call waited for itself for good). Only if no thread can be
 * started does it run in that call, and hang as before. That thread is joined: once it has
 * ended (Linux; elsewhere once its withdrawal is done, waiting for its exit), by the next
 * kc_ring_create (outside hooks), at the latest by the kc_sched_shutdown that ends the library's
 * threads once no host is counted, which waits for its withdrawal (one from inside an
 * undelivered hook, or on such a thread, at its exit, leaves it to a later one); before, it was
 * detached, and could run on past that shutdown. */
int32_t kc_ring_destroy(uint32_t ring);
/* Blocks until a record is ready (1), timeout_ns passes (0; 0 = none) or an interrupt (0).
 * KC_EINVAL from a coroutine or a scheduler worker's thread, as kc_scope_watch: it would block
 * the worker under the coroutines that complete the ring's operations (before, a hang). */
int32_t kc_ring_wait(uint32_t ring, uint64_t timeout_ns);
/* Makes the kc_ring_wait in progress return 0; with none in progress, the next one (an
 * interrupt is remembered until a wait that finds no record consumes it). */
int32_t kc_ring_interrupt(uint32_t ring);
/* Moves up to max records, oldest first, into out; returns how many. */
int32_t kc_ring_drain(uint32_t ring, struct kc_completion *out, uint32_t max);
/* After a ticket's record: copies a received value (size = its element size) into out and frees
 * the ticket. Pass out NULL where nothing was received (a send, a select whose send clause
 * fired, an operation that failed, a watch). With out NULL a received value is discarded as a
 * dropped one is: a zero-copy descriptor's release runs, another value goes to the channel's
 * undelivered hook. KC_EINVAL, the ticket kept: not completed yet (abort it instead), a size
 * other than the element's, an out where nothing was received (before, a send's own value or a
 * failed receive's stale element was copied into it). KC_EBADH: no such ticket (taken, aborted,
 * never issued). What counts is completion, not the drain: a take of a completed ticket whose
 * record was not drained yet succeeds, and that record still comes, naming a ticket gone (its
 * take is then KC_EBADH). KC_EINVAL, the ticket kept, from inside the undelivered hook of a
 * channel the operation is on (see kc_chan_on_undelivered). */
int32_t kc_ring_take(uint32_t ring, uint32_t ticket, void *out, uint32_t size);
/* kc_ring_take for a host that will not deliver the value received (its wait was aborted and
 * kc_ring_abort answered KC_EBUSY; ABI 19): after the ticket's record was drained, a received
 * value goes back to its channel in front of the values buffered now (on a closed channel it
 * stays receivable while values remain; a cancelled channel, one closed with nothing left and a
 * full one with a drop policy hand it to the undelivered path instead); a zero-copy descriptor
 * goes back as it is, its buffer not released. The channel's metrics then count it as never
 * received (the receive is a cancelled failure; a select's, one on each of its channels) and
 * sent once, also while it waits as the channel's first sender (a rendezvous with no receiver,
 * a full buffer's newest value). A send or a failed operation
 * is freed as kc_ring_take frees it. Errors as kc_ring_take. */
int32_t kc_ring_give_back(uint32_t ring, uint32_t ticket);
/* Withdraws a pending operation: 0 (no record will come, nothing delivered) or KC_EBUSY (it
 * completed: take it). Counted as a cancelled failure in the channel's metrics; a select's on
 * each of its channels (ABI 14 counted none for a select). A take or abort of a ticket that
 * another thread's take or abort is handling at that moment (or has handled) is KC_EBADH: one
 * call wins. (A ticket's number comes back for another operation only after about a million
 * operations on its ring: one that old may name that one.) KC_EINVAL, the ticket kept, from
 * inside the undelivered hook of a channel the operation is on (see kc_chan_on_undelivered). */
int32_t kc_ring_abort(uint32_t ring, uint32_t ticket);
/* kc_ring_abort for a host that completes the operation itself (hands the value over between
 * two of its own waiters and counts that as a hand-off): the same outcomes, but the channel's
 * metrics count no cancelled failure for it. */
int32_t kc_ring_withdraw(uint32_t ring, uint32_t ticket);
/* A close watch (ABI 20): tells the ring's isolate when channel `handle` ends, whoever ends it
 * (another isolate, a thread, native code; kc_chan_destroy cancels). 1: queued, *out_ticket set;
 * its record comes when the channel is closed (status KC_EPIPE) or cancelled (KC_ECANCELED); with
 * KC_WATCH_CANCEL only when it is cancelled (a close leaves it queued). KC_EPIPE / KC_ECANCELED
 * at once (nothing queued) when the channel has ended so already. A queued watch is withdrawn
 * with kc_ring_abort (0, or KC_EBUSY: its record came; counts no failure in the metrics) and by
 * kc_ring_destroy (a terminated Worker's ring too); after its record, kc_ring_take with out NULL
 * frees it (KC_EINVAL with an out: it received nothing). It holds the channel as a queued
 * operation does. KC_EBADH: the ring or the channel handle is gone (destroyed, stale); KC_EINVAL:
 * out_ticket NULL, flags unknown. With KC_WATCH_OWNED (ABI 21: ABI 20 refused it as unknown; the
 * ring's isolate feeds the channel, as a `produce` or an `actor` does) the ring's destroy while
 * the watch is still queued (kc_ring_destroy, or the exit of the thread that made the ring: a
 * terminated Worker's) cancels the channel, unless it was
 * closed or cancelled already: waiters in every isolate fail with KC_ECANCELED, buffered values
 * are dropped as any cancel drops them, and kc_chan_status's bit 2 says why. */
#define KC_WATCH_CANCEL (1u << 0) /* kc_ring_watch flag: told of a cancel only */
#define KC_WATCH_OWNED (1u << 1) /* kc_ring_watch flag: the ring's going away cancels the channel */
int32_t kc_ring_watch(uint32_t ring, uint32_t handle, uint32_t flags, uint32_t *out_ticket);
/* The other way to wake an isolate than a blocked kc_ring_wait: a thread of the library's own
 * calls notify() whenever records arrived since its last call (spuriously too: at start, after
 * an interrupt); the host drains the ring there. The thread ends once the ring is destroyed and
 * then stores 1 in *done: notify must stay callable until then. One a ring: a second call on the
 * same ring is KC_EBUSY, *done untouched (before, it started a second thread, and each record
 * called both notify functions). KC_ENOMEM: no thread could be started (a later call may try). */
typedef void (*kc_notify_fn)(void);
int32_t kc_ring_notify(uint32_t ring, kc_notify_fn notify, uint32_t *done);
/* 0: done now (a receive's value is in *out); 1: queued, *out_ticket set; or an error code. */
int32_t kc_chan_send_async(uint32_t handle, const void *elem, uint32_t size, uint32_t ring,
                           uint32_t *out_ticket);
int32_t kc_chan_recv_async(uint32_t handle, void *out, uint32_t size, uint32_t ring,
                           uint32_t *out_ticket);
/* As kc_select (flags: KC_SELECT_UNBIASED): 0 / KC_EPIPE / KC_ECANCELED with *out_index when a
 * clause completes now; 1 queued (*out_ticket; the record carries the index). */
int32_t kc_select_async(const struct kc_clause *clauses, uint32_t n, uint32_t flags, uint32_t ring,
                        uint32_t *out_ticket, uint32_t *out_index);

#ifdef __cplusplus
}
#endif

#endif /* KCORO_H */

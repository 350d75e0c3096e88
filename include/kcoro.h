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

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped on every incompatible change. Compare with kc_abi_version() after loading. */
#define KC_ABI_VERSION 1

/* Status codes (negated Linux errno values of the closest meaning). */
#define KC_OK 0
#define KC_ENOTCORO (-1)    /* called outside a coroutine */
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

/* Built-in entry functions (kc_builtin_entry). */
#define KC_BUILTIN_FIB 1        /* yields the first `arg` Fibonacci numbers */
#define KC_BUILTIN_YIELD_LOOP 2 /* yields forever, transfer word = yields so far */
#define KC_BUILTIN_PARK_LOOP 3  /* parks `arg` times, transfer word = wake-ups */

typedef void (*kc_entry_fn)(void *arg);

/* ABI version of the loaded library (never fails). */
uint32_t kc_abi_version(void);
/* Name of a status code, e.g. "KC_EBADH"; "KC_EUNKNOWN" for other values (never fails). */
const char *kc_status_name(int32_t status);

/* Creates a coroutine that will run entry(arg) when first resumed. stack_size 0 = 64 KiB;
 * otherwise 16 KiB .. 256 MiB, rounded up to pages. */
int32_t kc_coro_create(kc_entry_fn entry, void *arg, uint32_t stack_size, uint32_t flags,
                       uint32_t *out_handle);
/* Runs the coroutine until it yields, parks or finishes; returns the KC_STATE_* it is then in.
 * KC_EBUSY if it is running, parked (not yet unparked) or finished. */
int32_t kc_coro_resume(uint32_t handle);
/* From inside a coroutine: back to the resumer (KC_ENOTCORO elsewhere). */
int32_t kc_coro_yield(void);
/* Sets the transfer word and yields. */
int32_t kc_coro_yield_value(uint64_t value);
/* From inside a coroutine: park until kc_coro_unpark; returns at once if a permit is pending. */
int32_t kc_coro_park(void);
/* Any thread: 1 if the coroutine went from parked to ready (resume it), 0 if a permit was left. */
int32_t kc_coro_unpark(uint32_t handle);
/* The coroutine's KC_STATE_*. */
int32_t kc_coro_state(uint32_t handle);
/* Reads the coroutine's transfer word into *out. */
int32_t kc_coro_transfer(uint32_t handle, uint64_t *out);
/* Frees the coroutine and recycles its stack (KC_EBUSY while it runs). An unfinished coroutine
 * is abandoned without unwinding its stack. */
int32_t kc_coro_destroy(uint32_t handle);
/* Handle of the coroutine running on this thread, 0 outside one (never fails). */
uint32_t kc_coro_current(void);
/* Fills up to len of [live coroutines, pooled free stacks, stack mappings]; returns count. */
int32_t kc_coro_stats(uint64_t *out, uint32_t len);
/* A built-in entry function (KC_BUILTIN_*), or NULL (never fails). */
const void *kc_builtin_entry(uint32_t id);

#ifdef __cplusplus
}
#endif

#endif /* KCORO_H */

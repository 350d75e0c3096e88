/**
 * The one typed symbol table of libkcoro, as `Deno.dlopen` takes it. Each entry carries its C
 * prototype from `include/kcoro.h` (a test checks the two agree). The calls on hot paths (the
 * try-operations, the async sends and receives, the ring's drain and take) keep to
 * u32/i32/pointer/buffer parameters so that they take V8's fast path; u64 parameters are
 * deadlines, timeouts and scheduler generations. Several results come back through a
 * caller-owned typed array ("buffer"), never as a struct.
 *
 * `kc_coro_yield`, `kc_coro_yield_value` and `kc_coro_park` are absent on purpose: they are
 * called from inside a native coroutine, and JavaScript never runs on a coroutine's stack.
 * So are `kc_park_until` (coroutine-only too) and `kc_sleep_ns` (on the JavaScript thread it would
 * block the event loop).
 *
 * @module
 */

/**
 * The symbol table {@linkcode openLibrary} passes to `Deno.dlopen`: each libkcoro function kcoro
 * calls from JavaScript, with its C prototype. `Library.symbols(op)` returns the functions it
 * declares.
 */
export const symbols = {
  /** uint32_t kc_abi_version(void) */
  kc_abi_version: { parameters: [], result: "u32" },
  /** const char *kc_status_name(int32_t status) */
  kc_status_name: { parameters: ["i32"], result: "pointer" },
  /** uint32_t kc_lib_retain(void): one more host (isolate) of the library; the new count. */
  kc_lib_retain: { parameters: [], result: "u32" },
  /** int32_t kc_lib_release(void): one host fewer; how many remain (KC_EINVAL: none counted). */
  kc_lib_release: { parameters: [], result: "i32" },
  /** uint32_t kc_lib_retain_thread(void): kc_lib_retain, counted out when this thread ends. */
  kc_lib_retain_thread: { parameters: [], result: "u32" },
  /** int32_t kc_lib_release_thread(void): kc_lib_release for a kc_lib_retain_thread host. */
  kc_lib_release_thread: { parameters: [], result: "i32" },
  /**
   * int32_t kc_coro_create(kc_entry_fn entry, void *arg, uint32_t stack_size, uint32_t flags,
   *                        uint32_t *out_handle)
   *
   * `arg` is declared usize: a `void *` travels in the same register, and built-in entries
   * read it as an integer.
   */
  kc_coro_create: { parameters: ["pointer", "usize", "u32", "u32", "buffer"], result: "i32" },
  /** int32_t kc_coro_resume(uint32_t handle) */
  kc_coro_resume: { parameters: ["u32"], result: "i32" },
  /** int32_t kc_coro_unpark(uint32_t handle) */
  kc_coro_unpark: { parameters: ["u32"], result: "i32" },
  /** int32_t kc_coro_state(uint32_t handle) */
  kc_coro_state: { parameters: ["u32"], result: "i32" },
  /** int32_t kc_coro_transfer(uint32_t handle, uint64_t *out) */
  kc_coro_transfer: { parameters: ["u32", "buffer"], result: "i32" },
  /** int32_t kc_coro_destroy(uint32_t handle) */
  kc_coro_destroy: { parameters: ["u32"], result: "i32" },
  /**
   * int32_t kc_coro_hold(uint32_t handle): this thread holds the coroutine, destroyed when the
   * thread ends unless destroyed first (a Worker's, whose finalizers never run after its end).
   */
  kc_coro_hold: { parameters: ["u32"], result: "i32" },
  /** uint32_t kc_coro_current(void) */
  kc_coro_current: { parameters: [], result: "u32" },
  /** int32_t kc_coro_stats(uint64_t *out, uint32_t len) */
  kc_coro_stats: { parameters: ["buffer", "u32"], result: "i32" },
  /** const void *kc_builtin_entry(uint32_t id) */
  kc_builtin_entry: { parameters: ["u32"], result: "pointer" },
  /** uint64_t *kc_cells_alloc(uint32_t count): native cells (until released), or NULL. */
  kc_cells_alloc: { parameters: ["u32"], result: "pointer" },
  /** void kc_cells_release(uint64_t *cells): frees them now, or at the last pin's unpin. */
  kc_cells_release: { parameters: ["pointer"], result: "void" },
  /** int32_t kc_cells_pin(uint64_t *cells, int32_t delta): adds delta to their pins. */
  kc_cells_pin: { parameters: ["pointer", "i32"], result: "i32" },
  /** int32_t kc_sched_start(uint32_t workers, uint32_t stack_size, uint32_t flags) */
  kc_sched_start: { parameters: ["u32", "u32", "u32"], result: "i32" },
  /** int32_t kc_spawn(kc_entry_fn entry, void *arg, uint32_t flags, uint32_t *out_handle) */
  kc_spawn: { parameters: ["pointer", "pointer", "u32", "buffer"], result: "i32" },
  /**
   * int32_t kc_spawn_gen(kc_entry_fn entry, void *arg, uint32_t flags, uint32_t *out_handle,
   *                      uint64_t generation): onto that generation's scheduler only.
   */
  kc_spawn_gen: { parameters: ["pointer", "pointer", "u32", "buffer", "u64"], result: "i32" },
  /** int32_t kc_sched_drain(void), run on a helper thread: resolves when drained. */
  kc_sched_drain: { parameters: [], result: "i32", nonblocking: true },
  /** int32_t kc_sched_drain_for(uint64_t timeout_ns), on a helper thread. */
  kc_sched_drain_for: { parameters: ["u64"], result: "i32", nonblocking: true },
  /** int32_t kc_sched_shutdown(uint32_t mode): KC_SHUTDOWN_CANCEL joins the workers at once. */
  kc_sched_shutdown: { parameters: ["u32"], result: "i32" },
  /**
   * int32_t kc_sched_shutdown_timed(uint32_t mode, uint64_t timeout_ns): KC_ETIME if a worker
   * did not stop in time (stopped, not joined), or another thread's kc_coro_unpark, lookup or
   * drain stayed inside past the bound, or an abandoned coroutine's cleanup waited past it for a
   * channel lock a stuck undelivered hook's caller holds (stopped, joined, not all freed), or
   * the channel ends and on_done an abandon left still ran past it on a thread of the library's
   * (joined and freed): the next shutdown goes on from there; KC_EBUSY if another thread's short
   * call (a spawn) stayed inside past the bound (nothing stopped). Each result and the next
   * call's: include/kcoro.h.
   */
  kc_sched_shutdown_timed: { parameters: ["u32", "u64"], result: "i32" },
  /** int32_t kc_sched_shutdown(uint32_t mode), on a helper thread (KC_SHUTDOWN_FINISH drains). */
  kc_sched_shutdown_async: {
    name: "kc_sched_shutdown",
    parameters: ["u32"],
    result: "i32",
    nonblocking: true,
  },
  /**
   * int32_t kc_sched_shutdown_gen(uint32_t mode, uint64_t generation), on a helper thread: only
   * the scheduler of that generation (kc_sched_info's seventh value), never a later one.
   */
  kc_sched_shutdown_gen_async: {
    name: "kc_sched_shutdown_gen",
    parameters: ["u32", "u64"],
    result: "i32",
    nonblocking: true,
  },
  /**
   * int32_t kc_sched_ended(uint64_t generation): how that generation's scheduler ended
   * (KC_SHUTDOWN_FINISH: ran dry; KC_SHUTDOWN_CANCEL), KC_EBUSY while it runs or still drains.
   */
  kc_sched_ended: { parameters: ["u64"], result: "i32" },
  /**
   * int32_t kc_sched_abandoned(uint64_t generation): how many coroutines that generation's
   * shutdown abandoned (never finished, counted at its join: a finish's parked ones), KC_EBUSY
   * while it runs or until its join is done.
   * New in ABI 26.
   */
  kc_sched_abandoned: { parameters: ["u64"], result: "i32" },
  /** int32_t kc_sched_info(uint64_t *out, uint32_t len) */
  kc_sched_info: { parameters: ["buffer", "u32"], result: "i32" },
  /** int32_t kc_sched_stats(uint32_t worker, uint64_t *out, uint32_t len) */
  kc_sched_stats: { parameters: ["u32", "buffer", "u32"], result: "i32" },
  /** const void *kc_resolve(const char *library, const char *symbol) */
  kc_resolve: { parameters: ["buffer", "buffer"], result: "pointer" },
  /**
   * int32_t kc_chan_create(uint32_t elem_size, uint32_t capacity, uint32_t overflow,
   *                        uint32_t flags, uint32_t *out_handle)
   */
  kc_chan_create: { parameters: ["u32", "u32", "u32", "u32", "buffer"], result: "i32" },
  /**
   * int32_t kc_chan_send(uint32_t handle, const void *elem, uint32_t size,
   *                      uint64_t deadline_ns, uint32_t token, uint32_t flags)
   */
  kc_chan_send: { parameters: ["u32", "buffer", "u32", "u64", "u32", "u32"], result: "i32" },
  /**
   * int32_t kc_chan_recv(uint32_t handle, void *out, uint32_t size, uint64_t deadline_ns,
   *                      uint32_t token, uint32_t flags)
   */
  kc_chan_recv: { parameters: ["u32", "buffer", "u32", "u64", "u32", "u32"], result: "i32" },
  /**
   * int32_t kc_chan_try_send(uint32_t handle, const void *elem, uint32_t size). A pointer, not a
   * buffer: callers pass one stable scratch buffer's address (a buffer argument costs ~6 ns more).
   */
  kc_chan_try_send: { parameters: ["u32", "pointer", "u32"], result: "i32" },
  /**
   * int32_t kc_chan_retry_send(uint32_t handle, const void *elem, uint32_t size): a try-send
   * that counts no "full" failure, for the retries of a send waiting in JavaScript (its first
   * try counted it).
   */
  kc_chan_retry_send: { parameters: ["u32", "pointer", "u32"], result: "i32" },
  /** int32_t kc_chan_try_recv(uint32_t handle, void *out, uint32_t size) */
  kc_chan_try_recv: { parameters: ["u32", "pointer", "u32"], result: "i32" },
  /**
   * int32_t kc_chan_try_recv_n(uint32_t handle, void *out, uint32_t size, uint32_t max): up to
   * max try-receives; how many (an error only when none).
   */
  kc_chan_try_recv_n: { parameters: ["u32", "buffer", "u32", "u32"], result: "i32" },
  /**
   * int32_t kc_chan_try_send_n(uint32_t handle, const void *elems, uint32_t size, uint32_t n):
   * try-sends until one would wait; how many (an error only when none).
   */
  kc_chan_try_send_n: { parameters: ["u32", "buffer", "u32", "u32"], result: "i32" },
  /**
   * int32_t kc_chan_try_send_at(const uint32_t *handle_word, uint32_t handle, const void *elem,
   *                             uint32_t size): no handle-table lookup; the word comes from
   * kc_chan_ready_flag.
   */
  kc_chan_try_send_at: { parameters: ["pointer", "u32", "pointer", "u32"], result: "i32" },
  /**
   * int32_t kc_chan_try_send_copy(const uint32_t *handle_word, uint32_t handle, const void *data,
   *                               uint32_t len, uint32_t tag, struct kc_desc *desc):
   * kc_desc_make and a try-send of the descriptor in one call (handle_word may be NULL).
   */
  kc_chan_try_send_copy: {
    parameters: ["pointer", "u32", "buffer", "u32", "u32", "pointer"],
    result: "i32",
  },
  /**
   * int32_t kc_chan_try_recv_at(const uint32_t *handle_word, uint32_t handle, void *out,
   *                             uint32_t size)
   */
  kc_chan_try_recv_at: { parameters: ["pointer", "u32", "pointer", "u32"], result: "i32" },
  /** const uint8_t *kc_chan_ready_flag(uint32_t handle, const uint32_t **handle_word) */
  kc_chan_ready_flag: { parameters: ["u32", "buffer"], result: "pointer" },
  /** const uint8_t *kc_chan_blocked_flag(uint32_t handle) */
  kc_chan_blocked_flag: { parameters: ["u32"], result: "pointer" },
  /** const uint8_t *kc_chan_waiting_flag(uint32_t handle) (ABI 22) */
  kc_chan_waiting_flag: { parameters: ["u32"], result: "pointer" },
  /**
   * int32_t kc_chan_on_undelivered(uint32_t handle, void (*hook)(void *ctx, const void *elem),
   *                                void *ctx)
   */
  kc_chan_on_undelivered: { parameters: ["u32", "function", "pointer"], result: "i32" },
  /**
   * int32_t kc_chan_pipe_metrics(uint32_t source, uint32_t target, uint64_t interval_ns,
   *                              uint32_t *out_id)
   */
  kc_chan_pipe_metrics: { parameters: ["u32", "u32", "u64", "buffer"], result: "i32" },
  /** int32_t kc_chan_pipe_stop(uint32_t id) */
  kc_chan_pipe_stop: { parameters: ["u32"], result: "i32" },
  /** int32_t kc_token_create(uint32_t *out_handle) */
  kc_token_create: { parameters: ["buffer"], result: "i32" },
  /** int32_t kc_token_cancel(uint32_t token) */
  kc_token_cancel: { parameters: ["u32"], result: "i32" },
  /** int32_t kc_token_is_cancelled(uint32_t token) */
  kc_token_is_cancelled: { parameters: ["u32"], result: "i32" },
  /** int32_t kc_token_destroy(uint32_t token) */
  kc_token_destroy: { parameters: ["u32"], result: "i32" },
  /** int32_t kc_chan_close(uint32_t handle) */
  kc_chan_close: { parameters: ["u32"], result: "i32" },
  /** int32_t kc_chan_cancel(uint32_t handle) */
  kc_chan_cancel: { parameters: ["u32"], result: "i32" },
  /** int32_t kc_chan_destroy(uint32_t handle) */
  kc_chan_destroy: { parameters: ["u32"], result: "i32" },
  /**
   * int32_t kc_chan_hold(uint32_t handle, uint32_t flags): one more holder on this thread; the
   * last hold given back destroys the channel, unless one was taken with KC_CHAN_HOLD_FOREVER.
   */
  kc_chan_hold: { parameters: ["u32", "u32"], result: "i32" },
  /** int32_t kc_chan_unhold(uint32_t handle): 1 if it was the last hold and destroyed it. */
  kc_chan_unhold: { parameters: ["u32"], result: "i32" },
  /**
   * int32_t kc_chan_status(uint32_t handle): bits 0 closed, 1 drained, 2 cancelled by an owned
   * watch's ring, 3 cancelled after a close, 4 cancelled (ABI 24)
   */
  kc_chan_status: { parameters: ["u32"], result: "i32" },
  /** int32_t kc_chan_info(uint32_t handle, uint32_t *out): 4 words */
  kc_chan_info: { parameters: ["u32", "buffer"], result: "i32" },
  /** int32_t kc_chan_serial(uint32_t handle, uint64_t *out): the channel's identity (ABI 23) */
  kc_chan_serial: { parameters: ["u32", "buffer"], result: "i32" },
  /** int32_t kc_chan_snapshot(uint32_t handle, uint64_t *out, uint32_t len) */
  kc_chan_snapshot: { parameters: ["u32", "buffer", "u32"], result: "i32" },
  /** int32_t kc_chan_add_metrics(uint32_t handle, const uint64_t *counts, uint32_t n) */
  kc_chan_add_metrics: { parameters: ["u32", "buffer", "u32"], result: "i32" },
  /** int32_t kc_chan_compute_rate(const uint64_t *earlier, const uint64_t *later, double *out) */
  kc_chan_compute_rate: { parameters: ["buffer", "buffer", "buffer"], result: "i32" },
  /** int32_t kc_desc_make(const void *data, uint32_t len, uint32_t tag, struct kc_desc *out) */
  kc_desc_make: { parameters: ["buffer", "u32", "u32", "buffer"], result: "i32" },
  /** kc_desc_make with the descriptor by address (a slot whose address is known: no typed array
   * argument, ~20 ns less per call). */
  kc_desc_make_at: {
    name: "kc_desc_make",
    parameters: ["buffer", "u32", "u32", "pointer"],
    result: "i32",
  },
  /** int32_t kc_desc_free(const struct kc_desc *d) */
  kc_desc_free: { parameters: ["pointer"], result: "i32" },
  /** int32_t kc_buf_free(void *ptr) */
  kc_buf_free: { parameters: ["pointer"], result: "i32" },
  /** int32_t kc_pool_info(uint64_t *out) */
  kc_pool_info: { parameters: ["buffer"], result: "i32" },
  /** int32_t kc_pool_release(const void *chunk, uint32_t count) */
  kc_pool_release: { parameters: ["pointer", "u32"], result: "i32" },
  /** int32_t kc_pool_views(uint32_t **out) */
  kc_pool_views: { parameters: ["buffer"], result: "i32" },
  /** int32_t kc_chan_keep_undelivered(uint32_t handle) */
  kc_chan_keep_undelivered: { parameters: ["u32"], result: "i32" },
  /** int32_t kc_chan_take_undelivered(uint32_t handle, void *out, uint32_t size) */
  kc_chan_take_undelivered: { parameters: ["u32", "buffer", "u32"], result: "i32" },
  /** int32_t kc_chan_close_cause(uint32_t handle, const void *cause, uint32_t len, uint32_t flags) */
  kc_chan_close_cause: { parameters: ["u32", "buffer", "u32", "u32"], result: "i32" },
  /** int32_t kc_chan_cause(uint32_t handle, void *out, uint32_t cap) */
  kc_chan_cause: { parameters: ["u32", "buffer", "u32"], result: "i32" },
  /** int32_t kc_chan_cancel_cause(uint32_t handle, void *out, uint32_t cap) (ABI 23) */
  kc_chan_cancel_cause: { parameters: ["u32", "buffer", "u32"], result: "i32" },
  /** int32_t kc_chan_free_undelivered(uint32_t handle) */
  kc_chan_free_undelivered: { parameters: ["u32"], result: "i32" },
  /** int32_t kc_chan_drop(uint32_t handle, const void *elem, uint32_t size) */
  kc_chan_drop: { parameters: ["u32", "pointer", "u32"], result: "i32" },
  /** uint64_t kc_undelivered_lost(void) */
  kc_undelivered_lost: { parameters: [], result: "u64" },
  /**
   * int32_t kc_select(const struct kc_clause *clauses, uint32_t n, uint64_t deadline_ns,
   *                   uint32_t token, uint32_t flags, uint32_t *out_index)
   */
  kc_select: { parameters: ["buffer", "u32", "u64", "u32", "u32", "buffer"], result: "i32" },
  /** int32_t kc_scope_create(uint32_t parent, uint32_t *out_scope) */
  kc_scope_create: { parameters: ["u32", "buffer"], result: "i32" },
  /**
   * int32_t kc_scope_create_gen(uint32_t parent, uint32_t *out_scope, uint64_t generation): on
   * that generation's scheduler only.
   */
  kc_scope_create_gen: { parameters: ["u32", "buffer", "u64"], result: "i32" },
  /**
   * int32_t kc_scope_launch(uint32_t scope, kc_entry_fn entry, void *arg, uint32_t flags,
   *                         uint32_t *out_handle)
   */
  kc_scope_launch: {
    parameters: ["u32", "pointer", "pointer", "u32", "buffer"],
    result: "i32",
  },
  /** int32_t kc_scope_cancel(uint32_t scope) */
  kc_scope_cancel: { parameters: ["u32"], result: "i32" },
  /** int32_t kc_scope_live(uint32_t scope) */
  kc_scope_live: { parameters: ["u32"], result: "i32" },
  /** int32_t kc_scope_wait(uint32_t scope, uint64_t deadline_ns): blocks, so runs off-thread. */
  kc_scope_wait: { parameters: ["u32", "u64"], result: "i32", nonblocking: true },
  /**
   * int32_t kc_scope_watch(uint32_t scope, uint64_t deadline_ns): blocks until cancelled or
   * every child finished, so runs off-thread.
   */
  kc_scope_watch: { parameters: ["u32", "u64"], result: "i32", nonblocking: true },
  /**
   * int32_t kc_scope_watch(uint32_t scope, uint64_t deadline_ns) with a deadline already past:
   * answers at once (KC_EINTR cancelled, 0 no children, KC_ETIME children running).
   */
  kc_scope_poll: { name: "kc_scope_watch", parameters: ["u32", "u64"], result: "i32" },
  /** const uint64_t *kc_clock_word(void): the channel counters' coarse clock word. */
  kc_clock_word: { parameters: [], result: "pointer" },
  /** uint64_t kc_clock_now(void): the counters' coarse clock (ns); keeps its ticker running. */
  kc_clock_now: { parameters: [], result: "u64" },
  /** uint64_t kc_now_ns(void): the clock of every deadline_ns. */
  kc_now_ns: { parameters: [], result: "u64" },
  /** int32_t kc_scope_destroy(uint32_t scope) */
  kc_scope_destroy: { parameters: ["u32"], result: "i32" },
  /**
   * int32_t kc_scope_hold(uint32_t scope): this thread holds the scope, destroyed once idle after
   * the thread ends unless destroyed first (a Worker's, whose finalizers never run after its end).
   */
  kc_scope_hold: { parameters: ["u32"], result: "i32" },
  /** int32_t kc_scope_set_deadline(uint32_t scope, uint64_t deadline_ns) */
  kc_scope_set_deadline: { parameters: ["u32", "u64"], result: "i32" },
  /** uint64_t kc_deadline(void) */
  kc_deadline: { parameters: [], result: "u64" },
  /** int32_t kc_cancelled(void) */
  kc_cancelled: { parameters: [], result: "i32" },
  /**
   * int32_t kc_actor_spawn(uint32_t scope, uint32_t mailbox, kc_handler_fn handler, void *ctx,
   *                        kc_done_fn on_done, uint32_t *out_handle)
   */
  kc_actor_spawn: {
    parameters: ["u32", "u32", "pointer", "pointer", "pointer", "buffer"],
    result: "i32",
  },
  /**
   * int32_t kc_produce(uint32_t scope, uint32_t chan, kc_entry_fn entry, void *arg,
   *                    kc_done_fn on_done, uint32_t *out_handle)
   */
  kc_produce: {
    parameters: ["u32", "u32", "pointer", "pointer", "pointer", "buffer"],
    result: "i32",
  },
  /** int32_t kc_ring_create(uint32_t *out_ring) */
  kc_ring_create: { parameters: ["buffer"], result: "i32" },
  /** int32_t kc_ring_destroy(uint32_t ring) */
  kc_ring_destroy: { parameters: ["u32"], result: "i32" },
  /** int32_t kc_ring_wait(uint32_t ring, uint64_t timeout_ns): blocks, so runs off-thread. */
  kc_ring_wait: { parameters: ["u32", "u64"], result: "i32", nonblocking: true },
  /** int32_t kc_ring_interrupt(uint32_t ring) */
  kc_ring_interrupt: { parameters: ["u32"], result: "i32" },
  /** int32_t kc_ring_drain(uint32_t ring, struct kc_completion *out, uint32_t max) */
  kc_ring_drain: { parameters: ["u32", "buffer", "u32"], result: "i32" },
  /** int32_t kc_ring_take(uint32_t ring, uint32_t ticket, void *out, uint32_t size) */
  kc_ring_take: { parameters: ["u32", "u32", "buffer", "u32"], result: "i32" },
  /** kc_ring_take into a pinned buffer by address (NULL: discard), as kc_chan_send_async_at. */
  kc_ring_take_at: {
    name: "kc_ring_take",
    parameters: ["u32", "u32", "pointer", "u32"],
    result: "i32",
  },
  /**
   * int32_t kc_ring_notify(uint32_t ring, kc_notify_fn notify, uint32_t *done): a thread of the
   * library's own calls notify() (an UnsafeCallback.threadSafe) when records arrive; *done = 1
   * once it ended (after kc_ring_destroy).
   */
  kc_ring_notify: { parameters: ["u32", "function", "buffer"], result: "i32" },
  /** int32_t kc_ring_abort(uint32_t ring, uint32_t ticket) */
  kc_ring_abort: { parameters: ["u32", "u32"], result: "i32" },
  /** int32_t kc_ring_withdraw(uint32_t ring, uint32_t ticket) */
  kc_ring_withdraw: { parameters: ["u32", "u32"], result: "i32" },
  /** int32_t kc_ring_give_back(uint32_t ring, uint32_t ticket) (ABI 19) */
  kc_ring_give_back: { parameters: ["u32", "u32"], result: "i32" },
  /**
   * int32_t kc_ring_watch(uint32_t ring, uint32_t handle, uint32_t flags, uint32_t *out_ticket)
   * (ABI 20)
   */
  kc_ring_watch: { parameters: ["u32", "u32", "u32", "buffer"], result: "i32" },
  /**
   * int32_t kc_chan_send_async(uint32_t handle, const void *elem, uint32_t size, uint32_t ring,
   *                            uint32_t *out_ticket)
   */
  kc_chan_send_async: { parameters: ["u32", "buffer", "u32", "u32", "buffer"], result: "i32" },
  /**
   * int32_t kc_chan_recv_async(uint32_t handle, void *out, uint32_t size, uint32_t ring,
   *                            uint32_t *out_ticket)
   */
  kc_chan_recv_async: { parameters: ["u32", "buffer", "u32", "u32", "buffer"], result: "i32" },
  /** kc_chan_send_async with the value and the ticket by address (pinned buffers: no typed
   * array argument, which costs ~20 ns, and ~1 µs the first time V8 moves one off its heap). */
  kc_chan_send_async_at: {
    name: "kc_chan_send_async",
    parameters: ["u32", "pointer", "u32", "u32", "pointer"],
    result: "i32",
  },
  /** kc_chan_recv_async by address, as kc_chan_send_async_at. */
  kc_chan_recv_async_at: {
    name: "kc_chan_recv_async",
    parameters: ["u32", "pointer", "u32", "u32", "pointer"],
    result: "i32",
  },
  /**
   * int32_t kc_select_async(const struct kc_clause *clauses, uint32_t n, uint32_t flags,
   *                         uint32_t ring, uint32_t *out_ticket, uint32_t *out_index)
   */
  kc_select_async: {
    parameters: ["buffer", "u32", "u32", "u32", "buffer", "buffer"],
    result: "i32",
  },
} as const satisfies Deno.ForeignLibraryInterface;

// Frozen, each definition and its parameter list too: the table is exported, and a definition
// changed before the library opens (a parameter's type, a result) makes every call through it
// pass or read the wrong thing: memory corrupted or a crash, not an error.
for (const def of Object.values(symbols)) {
  Object.freeze((def as { parameters: readonly unknown[] }).parameters);
  Object.freeze(def);
}
Object.freeze(symbols);

/** The type of {@linkcode symbols}: what `Deno.DynamicLibrary<Symbols>` is opened with. */
export type Symbols = typeof symbols;

// A C program's threads and libkcoro's thread-specific keys: what runs as a thread ends (the
// destructors of the rings' key and of the thread records' key) is the library's own code, so
// the library must stay mapped while any thread may still run it, and an ending thread must not
// make a key it has no use for. The program is built with `zig cc` and loads the library with
// dlopen, as a plugin host would.
import assert from "node:assert/strict";

const root = new URL("../", import.meta.url).pathname;
const lib = `${root}zig-out/lib/libkcoro.so`;

const source = `#include <dlfcn.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef int32_t (*ring_create_fn)(uint32_t *);
typedef int32_t (*chan_create_fn)(uint32_t, uint32_t, uint32_t, uint32_t, uint32_t *);
typedef int32_t (*chan_hold_fn)(uint32_t, uint32_t);
typedef uint32_t (*lib_retain_fn)(void);
typedef int32_t (*lib_release_fn)(void);

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int made = 0, go = 0;
static int32_t rc = -1;
static ring_create_fn ring_create;
static chan_hold_fn chan_hold;
static uint32_t ch;
static lib_retain_fn lib_retain;
static lib_release_fn lib_release;
static int32_t own_rc = -1;

typedef int32_t (*sched_start_fn)(uint32_t, uint32_t, uint32_t);
typedef int32_t (*spawn_fn)(void (*)(void *), void *, uint32_t, uint32_t *);
static lib_retain_fn lib_retain_thread;
static sched_start_fn sched_start;
static spawn_fn spawn;
static int32_t spawn_rc = -1;
static int spinning = 0, token = 0;

/* A coroutine that never yields: its worker never leaves it. */
static void spin_forever(void *arg) {
  (void)arg;
  __atomic_store_n(&spinning, 1, __ATOMIC_RELEASE);
  for (volatile unsigned long i = 0;; i++) {}
}

/* The process's only host: starts the scheduler, spawns the spin, and ends once it runs. Its end
 * counts the last host out, which shuts the scheduler down on this thread. */
static void *spinHost(void *arg) {
  (void)arg;
  lib_retain_thread();
  rc = sched_start(1, 0, 0);
  spawn_rc = spawn(spin_forever, &token, 0, NULL);
  while (spawn_rc == 0 && !__atomic_load_n(&spinning, __ATOMIC_ACQUIRE)) sched_yield();
  return NULL;
}

/* Makes a ring, then lives until told to end: its exit runs the rings' key's destructor. */
static void *maker(void *arg) {
  (void)arg;
  uint32_t ring = 0;
  rc = ring_create(&ring);
  pthread_mutex_lock(&mu);
  made = 1;
  pthread_cond_broadcast(&cv);
  while (!go) pthread_cond_wait(&cv, &mu);
  pthread_mutex_unlock(&mu);
  return NULL;
}

/* How many more thread-specific keys this process can make: makes them until refused, then
 * deletes them. A key made in between (by a thread's end) is one fewer, in whatever slot the C
 * library put it. -1 if the library allows more than the count here bounds. */
static int freeKeys(void) {
  static pthread_key_t keys[1 << 16];
  int n = 0;
  while (n < (int)(sizeof keys / sizeof keys[0]) && pthread_key_create(&keys[n], NULL) == 0) n++;
  int bounded = n < (int)(sizeof keys / sizeof keys[0]);
  for (int i = 0; i < n; i++) pthread_key_delete(keys[i]);
  return bounded ? n : -1;
}

/* Holds a channel and ends: its exit runs the thread records' key's destructor, no ring made. */
static void *holder(void *arg) {
  (void)arg;
  rc = chan_hold(ch, 0);
  return NULL;
}

/* Counts out a host the main thread counted in (this thread has none of its own), then counts
 * in and out one of its own: plain calls, which bind nothing to the thread. */
static void *releaser(void *arg) {
  (void)arg;
  rc = lib_release();
  lib_retain();
  own_rc = lib_release();
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 3) return 2;
  void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    fprintf(stderr, "dlopen: %s\\n", dlerror());
    return 2;
  }
  pthread_t t;
  if (strcmp(argv[2], "unload") == 0) {
    ring_create = (ring_create_fn)dlsym(lib, "kc_ring_create");
    pthread_create(&t, NULL, maker, NULL);
    pthread_mutex_lock(&mu);
    while (!made) pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    printf("ring %d\\n", rc);
    dlclose(lib); /* the host is done with the library; its thread lives on */
    printf("loaded after dlclose: %s\\n", dlopen(argv[1], RTLD_NOW | RTLD_NOLOAD) ? "yes" : "no");
    fflush(stdout);
    pthread_mutex_lock(&mu);
    go = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    pthread_join(t, NULL);
    printf("thread ended\\n");
    return 0;
  }
  if (strcmp(argv[2], "spin") == 0) {
    lib_retain_thread = (lib_retain_fn)dlsym(lib, "kc_lib_retain_thread");
    sched_start = (sched_start_fn)dlsym(lib, "kc_sched_start");
    spawn = (spawn_fn)dlsym(lib, "kc_spawn");
    pthread_create(&t, NULL, spinHost, NULL);
    pthread_join(t, NULL);
    printf("start %d, spawn %d, host thread ended\\n", rc, spawn_rc);
    return 0; /* the process ends with the worker still spinning */
  }
  if (strcmp(argv[2], "plain") == 0) {
    /* Plain kc_lib_retain / kc_lib_release, with no thread record anywhere: neither makes the
     * records' key (kc_lib_release looks for a record only on a thread that made one). */
    lib_retain = (lib_retain_fn)dlsym(lib, "kc_lib_retain");
    lib_release = (lib_release_fn)dlsym(lib, "kc_lib_release");
    int before = freeKeys();
    uint32_t n = lib_retain();
    pthread_create(&t, NULL, releaser, NULL);
    pthread_join(t, NULL);
    int after = freeKeys();
    printf("keys free before: %s\\n", before > 0 ? "some" : "none or unbounded");
    printf("retained %u, released %d and %d, keys made: %d\\n", n, rc, own_rc, before - after);
    return 0;
  }
  /* "keys": a thread that made no ring ends; the keys the process can still make, counted before
   * and after, tell whether its end made one, whatever slot the C library gives a new key. */
  chan_create_fn chan_create = (chan_create_fn)dlsym(lib, "kc_chan_create");
  chan_hold = (chan_hold_fn)dlsym(lib, "kc_chan_hold");
  int32_t created = chan_create(8, 1, 0, 0, &ch);
  printf("channel %d, hold %d\\n", created, chan_hold(ch, 0)); /* the records' key, made now */
  int before = freeKeys();
  pthread_create(&t, NULL, holder, NULL);
  pthread_join(t, NULL);
  int after = freeKeys();
  printf("keys free before: %s\\n", before > 0 ? "some" : "none or unbounded");
  printf("thread's hold %d, keys its end made: %d\\n", rc, before - after);
  return 0;
}
`;

async function buildProgram(dir: string): Promise<string> {
  await Deno.writeTextFile(`${dir}/thread_end.c`, source);
  const zig = Deno.env.get("KCORO_ZIG") ?? `${root}.toolchain/zig/bin/zig`;
  const build = await new Deno.Command(zig, {
    args: ["cc", `${dir}/thread_end.c`, "-o", `${dir}/thread_end`, "-ldl", "-lpthread"],
    stderr: "piped",
  }).output();
  assert.ok(build.success, new TextDecoder().decode(build.stderr));
  return `${dir}/thread_end`;
}

async function run(program: string, mode: string, limitMs: number) {
  const out = await new Deno.Command(program, {
    args: [lib, mode],
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(limitMs), // a bound against a hang only
  }).output();
  return {
    code: out.code,
    signal: out.signal,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

/** Builds the program in a fresh temporary directory and runs it in `mode`; the directory goes after. */
async function buildAndRun(mode: string, limitMs = 120_000) {
  const dir = await Deno.makeTempDir();
  try {
    return await run(await buildProgram(dir), mode, limitMs);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("C ABI: a thread that made a ring ends after its program dlclosed the library: the library stays loaded for its rings' destructor", async () => {
  // The rings' key's destructor (it destroys the thread's rings as it exits) is the library's
  // code: making the key pins the library (RTLD_NODELETE), as the thread records' key does.
  // Before, nothing had pinned it (no scheduler started, no hold taken): the dlclose unmapped
  // it, and the thread's exit ran the destructor there (SIGSEGV).
  const res = await buildAndRun("unload");
  assert.equal(res.signal, null, `killed by ${res.signal}: ${res.stdout}${res.stderr}`);
  assert.equal(res.code, 0, res.stderr);
  assert.equal(res.stdout, "ring 0\nloaded after dlclose: yes\nthread ended\n");
});

Deno.test("C ABI: plain kc_lib_retain and kc_lib_release, also a release on a thread that counted in none, make no thread-specific key", async () => {
  // kc_lib_release on a thread with no plain host of its own looks for the thread's record (a
  // kc_lib_retain_thread host to count out) only where the thread made one: a lookup anywhere else
  // would make the records' key, and pin the library, for a host that asked for neither (8a36404
  // added the lookup; without its guard this says "keys made: 1").
  const res = await buildAndRun("plain");
  assert.equal(res.code, 0, res.stderr);
  assert.equal(
    res.stdout,
    "keys free before: some\nretained 1, released 0 and 0, keys made: 0\n",
  );
});

Deno.test("C ABI: a thread that made no ring makes no thread-specific key as it ends", async () => {
  // A thread with a record (a hold) ends: its end destroys its rings, and had none. Before, it
  // made the rings' key there, and pinned the library, for nothing.
  const res = await buildAndRun("keys");
  assert.equal(res.code, 0, res.stderr);
  assert.equal(
    res.stdout,
    "channel 0, hold 0\nkeys free before: some\nthread's hold 0, keys its end made: 0\n",
  );
});

Deno.test("C ABI: the last host thread's end does not wait for good for a coroutine that never yields", async () => {
  // The last host's end shuts the scheduler down (cancel) on its thread and joins the workers; a
  // coroutine that never yields kept its worker, and the thread's end (the program's
  // pthread_join) waited for good (killed here at the 30 s bound). Bounded now (2 s,
  // kc_sched_shutdown_timed): the thread ends, the scheduler stopped, its worker unjoined.
  const t0 = performance.now();
  let res;
  try {
    res = await buildAndRun("spin", 30_000);
  } catch (e) {
    throw new Error(`the program did not end after ${performance.now() - t0} ms`, { cause: e });
  }
  assert.equal(res.signal, null, `killed by ${res.signal}: ${res.stdout}${res.stderr}`);
  assert.equal(res.code, 0, res.stderr);
  assert.equal(res.stdout, "start 0, spawn 0, host thread ended\n");
});

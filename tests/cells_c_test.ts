// kc_cells_pin and kc_cells_release from C, against the shipped (ReleaseFast) library: an address
// that is no live block of kc_cells_alloc's is refused by the header's check word in every build
// mode. The check was a Debug assertion only: here a pin of a pointer into a block wrote into the
// block's memory as a "state" and answered 0, and a release after the free freed the block twice
// (the C library aborts: "double free detected"). Nor is anything read at an address before it
// is found among the live blocks: a pointer at the start of a mapping (the page before it
// unmapped) and a second release of an 8 MiB block (unmapped by the C library at its free)
// faulted (SIGSEGV), as the header's check word was read in place.
import assert from "node:assert/strict";

const root = new URL("../", import.meta.url).pathname;

const source = `#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "kcoro.h"

static uint64_t live(void) {
  uint64_t s[4] = {0};
  return kc_coro_stats(s, 4) == 4 ? s[3] : (uint64_t)-1;
}

int main(void) {
  uint64_t base = live();
  uint64_t *c = kc_cells_alloc(8);
  if (!c) return 2;
  /* A copy of the block's header before other memory: its check names the block's address. */
  static _Alignas(16) uint64_t copy[6 + 8];
  memcpy(copy, c - 6, 48);
  uint64_t *bad[] = {c + 2, c + 6, c + 1, c - 1, copy + 6};
  int refused = 0;
  for (unsigned i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    refused += kc_cells_pin(bad[i], 1) == KC_EINVAL;
    refused += kc_cells_pin(bad[i], -1) == KC_EINVAL;
    kc_cells_release(bad[i]);
  }
  int untouched = 1;
  for (int i = 0; i < 8; i++) untouched &= c[i] == 0;
  printf("refused %d of %d, cells untouched: %s, live %d\\n", refused,
         (int)(2 * sizeof bad / sizeof bad[0]), untouched ? "yes" : "no", (int)(live() - base));
  printf("pin %d\\n", kc_cells_pin(c, 1));
  kc_cells_release(c);
  kc_cells_release(c); /* a second release, still pinned: nothing */
  printf("released twice while pinned, live %d\\n", (int)(live() - base));
  printf("unpin %d, live %d\\n", kc_cells_pin(c, -1), (int)(live() - base));
  kc_cells_release(c); /* after the free: its check word was cleared, so refused */
  printf("released after the free, pin %d, live %d\\n", kc_cells_pin(c, 1), (int)(live() - base));
  long page = sysconf(_SC_PAGESIZE);
  char *m = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return 3;
  munmap(m, page); /* the page before the address: unmapped */
  uint64_t *start = (uint64_t *)(m + page);
  int at_start = kc_cells_pin(start, 1);
  kc_cells_release(start);
  printf("start of a mapping, pin %d, untouched: %s\\n", at_start, start[0] == 0 ? "yes" : "no");
  uint64_t *big = kc_cells_alloc(1u << 20); /* 8 MiB: the C library maps it, and unmaps it */
  if (!big) return 4;
  kc_cells_release(big);
  kc_cells_release(big);
  printf("8 MiB released twice, pin %d, live %d\\n", kc_cells_pin(big, 1), (int)(live() - base));
  return 0;
}
`;

Deno.test("C ABI: kc_cells_pin and kc_cells_release refuse an address that is no live block of cells in the shipped library: KC_EINVAL, nothing written or freed", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/cells.c`, source);
    const zig = Deno.env.get("KCORO_ZIG") ?? `${root}.toolchain/zig/bin/zig`;
    const build = await new Deno.Command(zig, {
      args: [
        "cc",
        `${dir}/cells.c`,
        `-I${root}include`,
        `-L${root}zig-out/lib`,
        "-lkcoro",
        "-o",
        `${dir}/cells`,
      ],
      stderr: "piped",
    }).output();
    assert.ok(build.success, new TextDecoder().decode(build.stderr));
    const run = await new Deno.Command(`${dir}/cells`, {
      env: { LD_LIBRARY_PATH: `${root}zig-out/lib` },
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(60_000), // a bound against a hang only
    }).output();
    const stdout = new TextDecoder().decode(run.stdout);
    assert.equal(run.signal, null, `killed by ${run.signal}: ${stdout}`);
    assert.equal(run.code, 0, new TextDecoder().decode(run.stderr));
    assert.equal(
      stdout,
      "refused 10 of 10, cells untouched: yes, live 1\n" +
        "pin 0\n" +
        "released twice while pinned, live 1\n" +
        "unpin 0, live 0\n" +
        "released after the free, pin -22, live 0\n" +
        "start of a mapping, pin -22, untouched: yes\n" +
        "8 MiB released twice, pin -22, live 0\n",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

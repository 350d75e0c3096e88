// Peer benchmark: Boost.Context's jump_fcontext ping-pong, the same shape as kcoro's
// "switch (callee-saved regs, jmp back)" figure. Built and run by bench/run.ts when
// libboost-context-dev is installed. Prints one JSON object per line, like kcoro-bench --json.
#include <boost/context/detail/fcontext.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace ctx = boost::context::detail;

static void loop(ctx::transfer_t t) {
  for (;;) t = ctx::jump_fcontext(t.fctx, nullptr);
}

int main(int argc, char **argv) {
  bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const std::uint64_t n = quick ? 1000000 : 10000000;
  const int runs = quick ? 3 : 7;
  const std::size_t size = 64 * 1024;
  void *stack = std::aligned_alloc(16, size);
  double best = 1e300;
  for (int r = 0; r < runs; r++) {
    ctx::fcontext_t c = ctx::make_fcontext(static_cast<char *>(stack) + size, size, loop);
    ctx::transfer_t t = ctx::jump_fcontext(c, nullptr);
    auto t0 = std::chrono::steady_clock::now();
    for (std::uint64_t i = 0; i < n; i++) t = ctx::jump_fcontext(t.fctx, nullptr);
    auto t1 = std::chrono::steady_clock::now();
    double ns = std::chrono::duration<double, std::nano>(t1 - t0).count() / (2.0 * n);
    if (ns < best) best = ns;
  }
  std::printf("{\"name\":\"boost jump_fcontext\",\"value\":%.3f,\"unit\":\"ns/switch\",\"iterations\":%llu}\n",
              best, static_cast<unsigned long long>(2 * n));
  std::free(stack);
  return 0;
}

// Helpers shared by the Deno tests (not a test file itself).

/** Rejects with the signal's reason when it aborts: a task that runs until cancelled. */
export function untilAborted(signal: AbortSignal): Promise<never> {
  return new Promise((_, reject) => {
    if (signal.aborted) reject(signal.reason);
    signal.addEventListener("abort", () => reject(signal.reason), { once: true });
  });
}

const root = new URL("../", import.meta.url).pathname;

/**
 * Runs `code` with `deno eval` in a child process at the repository root (so it can import
 * "./mod.ts") and reports how it ended and how long it took: for tests that a process exits
 * by itself.
 */
export async function evalScript(
  code: string,
): Promise<{ code: number; ms: number; stderr: string }> {
  const t0 = performance.now();
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--quiet", code],
    env: { NO_COLOR: "1" },
    cwd: root,
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code: out.code,
    ms: performance.now() - t0,
    stderr: new TextDecoder().decode(out.stderr),
  };
}

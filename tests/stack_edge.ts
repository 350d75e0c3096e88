// Runs an act at a chosen depth of an all but full stack: what job_test's stack-edge scans and
// their subprocess fixture (tests/fixtures/stack_edge_scan.ts) share. No imports: the fixture
// runs it in a process of its own under V8 flags.

/**
 * Calls `act` `n` frames and `k` arguments deep (each argument a stack slot: finer steps than a
 * frame): "no room" where the stack overflowed before `act` was called, else "threw" (`act`, or
 * the frames around it on its way out) or "ran".
 */
export function atDepth(n: number, k: number, act: () => void): "no room" | "threw" | "ran" {
  const rec = (n: number, f: () => void): void => {
    if (n === 0) f();
    else rec(n - 1, f);
  };
  function bottom(this: () => void) {
    this();
  }
  let called = false, threw = false;
  try {
    rec(n, () =>
      Reflect.apply(bottom, () => {
        called = true;
        try {
          act();
        } catch {
          threw = true; // the overflow, thrown to the caller
        }
      }, new Array(k).fill(0)));
  } catch {
    threw = true; // overflowed before `act` was called, or in the catch above
  }
  return !called ? "no room" : threw ? "threw" : "ran";
}

/**
 * Numbers shared by the benches and bench/run.ts, which reads their output.
 *
 * @module
 */

/**
 * Round trips per iteration of each bench in bench/channel_bench.ts's "pingpong" group
 * (bench/run.ts divides by it): one per iteration would mostly measure deno bench's own
 * per-iteration cost for async functions (an async call + await measured 190-245 ns that way
 * against 121-140 ns in a loop, 2026-12-03).
 */
export const PINGPONG_ROUNDS = 100;

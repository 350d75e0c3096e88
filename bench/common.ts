// Helpers shared by the bench drivers (bench/run.ts, bench/scaling.ts).
import type { Figure } from "./table.ts";

/** The repository root, as a path ending in "/". */
export const root = new URL("../", import.meta.url).pathname;

/** One figure a bench executable printed as a JSON line. */
export interface Line {
  name: string;
  value: number;
  unit: string;
}

/**
 * Runs `cmd args` in `cwd` (with `env` added) and returns its standard output; throws with its
 * output on failure (Go's test binaries print their failures on stdout).
 */
export async function run(
  cmd: string,
  args: string[],
  cwd = root,
  env?: Record<string, string>,
): Promise<string> {
  const out = await new Deno.Command(cmd, { args, cwd, env, stdout: "piped", stderr: "piped" })
    .output();
  if (!out.success) {
    const text = (b: Uint8Array) => new TextDecoder().decode(b);
    throw new Error(`${cmd} ${args.join(" ")} failed:\n${text(out.stderr)}${text(out.stdout)}`);
  }
  return new TextDecoder().decode(out.stdout);
}

/** The JSON lines of a bench executable's `--json` output. */
export function jsonLines(text: string): Line[] {
  return text.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
}

/** A figure beside its peer (ratio = value / peer's, rounded to three decimals). */
export function figure(line: Line, peer?: Line | null): Figure {
  const ratio = peer ? line.value / peer.value : null;
  return {
    name: line.name,
    value: line.value,
    unit: line.unit,
    peer: peer?.name ?? null,
    peer_value: peer?.value ?? null,
    ratio: ratio === null ? null : Math.round(ratio * 1000) / 1000,
  };
}

/** The Zig bench executable's actor figures' names (bench/native/bench.zig, `actorBenches`). */
export const ACTOR_PLAIN = "actor: message (self-fed conflated mailbox, 1 worker)";
export const ACTOR_DEADLINE = "actor: message with a context deadline (self-fed, 1 worker)";

/**
 * The native actor's figures of the Zig bench executable's lines (`native`), for the scheduler's
 * suite (sched.json): no peer (Go has no actor: a regression row), and the same actor with a
 * context deadline (set an hour away, never reached) against it without, whose ratio is what
 * looking at the deadline costs. Empty where the executable printed neither.
 */
export function actorFigures(native: Line[]): Figure[] {
  const plain = native.find((l) => l.name === ACTOR_PLAIN);
  const timed = native.find((l) => l.name === ACTOR_DEADLINE);
  const out: Figure[] = [];
  if (plain !== undefined) out.push(figure(plain));
  if (timed !== undefined) out.push(figure(timed, plain));
  return out;
}

/** Writes `figures` to bench/results/<suite>.json. */
export async function save(suite: string, figures: Figure[]): Promise<void> {
  await Deno.mkdir(`${root}bench/results`, { recursive: true });
  await Deno.writeTextFile(
    `${root}bench/results/${suite}.json`,
    JSON.stringify(figures, null, 2) + "\n",
  );
}

/**
 * Records in `best` each benchmark's value in `go test -bench` output, keeping the lowest, keyed
 * "Name-GOMAXPROCS".
 */
export function keepBestGo(text: string, best: Map<string, number>): void {
  for (const line of text.split("\n")) {
    // Go omits the "-N" suffix when GOMAXPROCS is 1. Our own benchmarks report a custom
    // metric after ns/op (they size their own work); the runtime-style ones only ns/op.
    const m = /^Benchmark(\w+?)(?:-(\d+))?\s+\d+\s+([\d.]+) ns\/op(?:\s+([\d.]+) (\S+))?/.exec(
      line,
    );
    if (!m) continue;
    const key = `${m[1]}-${m[2] ?? "1"}`;
    const v = Number(m[4] ?? m[3]);
    best.set(key, Math.min(v, best.get(key) ?? Infinity));
  }
}

/** Whether `cmd args` runs and succeeds (a tool this machine may lack). */
export function hasCommand(cmd: string, args: string[]): Promise<boolean> {
  return new Deno.Command(cmd, { args, stdout: "null", stderr: "null" }).output()
    .then((o) => o.success, () => false);
}

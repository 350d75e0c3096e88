/**
 * `./task bench-scaling [--quick] [--max-workers N]`: how the scheduler and its channels scale
 * with the number of workers. The figures of bench/native/bench.zig that depend on the worker
 * count (`--scaling`: spawn, skynet, a CPU fan-out, and four of Go's channel benchmarks) at 1,
 * 2, 4, ... workers up to the CPUs this process may use, beside the same Go programs
 * (bench/go) at `-cpu` 1, 2, 4, ... in the same run. Prints one table per figure (kcoro, Go,
 * ratio, and each one's speedup over its own 1-worker run) and writes
 * bench/results/scaling.json (not part of the README's main table: this machine has 2 CPUs,
 * the scaling figures come from a larger one).
 *
 * For a machine without Zig or Go (the larger one):
 *   `deno run -A bench/scaling.ts --build-only DIR` here builds DIR/kcoro-bench and
 *   DIR/go-bench.test (`go test -c`); `--prebuilt DIR` there runs those instead of building.
 */
import { type Figure, scalingMarkdown, scalingPairs } from "./table.ts";
import { figure, hasCommand, jsonLines, keepBestGo, type Line, root, run, save } from "./common.ts";

const args = Deno.args;
const quick = args.includes("--quick");
/** The value after `flag`, or undefined. */
const option = (flag: string): string | undefined => {
  const i = args.indexOf(flag);
  return i >= 0 ? args[i + 1] : undefined;
};
const buildOnly = option("--build-only");
const prebuiltDir = option("--prebuilt");
/** Absolute: the Go binary runs in bench/go. */
const prebuilt = prebuiltDir === undefined ? undefined : Deno.realPathSync(prebuiltDir);
const maxWorkers = option("--max-workers");
const zig = Deno.env.get("KCORO_ZIG") ?? "zig";

if (buildOnly !== undefined) {
  await Deno.mkdir(buildOnly, { recursive: true });
  await run(zig, ["build", "bench-exe"]);
  await Deno.copyFile(`${root}zig-out/bin/kcoro-bench`, `${buildOnly}/kcoro-bench`);
  await run(
    "go",
    ["test", "-c", "-o", `${Deno.realPathSync(buildOnly)}/go-bench.test`],
    `${root}bench/go`,
  );
  console.log(`built ${buildOnly}/kcoro-bench and ${buildOnly}/go-bench.test`);
  Deno.exit(0);
}

// --- kcoro --------------------------------------------------------------------------------
const benchArgs = ["--scaling", "--json", ...(quick ? ["--quick"] : [])];
if (maxWorkers !== undefined) benchArgs.push("--max-workers", maxWorkers);
const kcoroLines = jsonLines(
  prebuilt !== undefined
    ? await run(`${prebuilt}/kcoro-bench`, benchArgs)
    : await run(zig, ["build", "bench", "--", ...benchArgs]),
);
/** Worker counts measured, from the labels' "(N workers)". */
const counts = [
  ...new Set(kcoroLines.map((l) => Number(/\((\d+) workers?\)$/.exec(l.name)![1]))),
].sort((a, b) => a - b);

// --- Go -----------------------------------------------------------------------------------
const go = new Map<string, number>();
const goRuns = [
  // The scheduler programs size their own work: one iteration each.
  ["-bench", "^Benchmark(CreateGoroutines|Skynet|FanOut)$", "-benchtime", "1x"],
  ["-bench", "^Benchmark(ChanUncontended|ChanSync|ChanProdCons100|ChanSem)$", "-benchtime"]
    .concat(quick ? "200ms" : "1s"),
];
const goOk = prebuilt !== undefined || await hasCommand("go", ["version"]);
if (!goOk) console.log("(Go peers skipped: `go` is not on PATH)");
// One run per worker count, with GOMAXPROCS set as well as -cpu: given a list, `go test` runs
// each benchmark's first iteration (the whole benchmark, at -benchtime 1x) before it applies the
// list's first entry, at the machine's default (FanOut "at -cpu 1" measured 16 CPUs' time).
for (const r of goOk ? goRuns : []) {
  for (const w of counts) {
    const common = ["-run", "^$", ...r, "-count", quick ? "1" : "3", "-cpu", String(w)];
    const env = { GOMAXPROCS: String(w) };
    try {
      const text = prebuilt !== undefined
        ? await run(
          `${prebuilt}/go-bench.test`,
          common.map((a) => a.startsWith("-") ? `-test.${a.slice(1)}` : a),
          `${root}bench/go`,
          env,
        )
        : await run("go", ["test", ...common], `${root}bench/go`, env);
      keepBestGo(text, go);
    } catch (e) {
      console.log(`(Go peers skipped: ${(e as Error).message.split("\n").slice(0, 8).join("\n")})`);
    }
  }
}

// --- tables -------------------------------------------------------------------------------
const cpus = navigator.hardwareConcurrency;
console.log(`\nscaling on ${cpus} CPUs (kcoro workers = Go's GOMAXPROCS; best of runs)`);
const figures: Figure[] = [];
for (const p of scalingPairs) {
  const mine = new Map<number, Line>();
  for (const l of kcoroLines) {
    const m = /^(.*) \((\d+) workers?\)$/.exec(l.name)!;
    if (m[1] === p.kcoro) mine.set(Number(m[2]), l);
  }
  if (mine.size === 0) continue;
  const unit = mine.values().next().value!.unit;
  console.log(`\n  ${p.kcoro.slice("scaling: ".length)} (${unit}; Go: ${p.go})`);
  console.log(
    `    ${"workers".padStart(7)} ${"kcoro".padStart(10)} ${"Go".padStart(10)} ${
      "ratio".padStart(7)
    }` +
      ` ${"kcoro speedup".padStart(14)} ${"Go speedup".padStart(11)}`,
  );
  const base = mine.get(1)?.value, goBase = go.get(`${p.go}-1`);
  for (const w of counts) {
    const l = mine.get(w);
    if (l === undefined) continue;
    const g = go.get(`${p.go}-${w}`);
    const peer: Line | null = g === undefined
      ? null
      : { name: `Go ${p.go} (-cpu ${w})`, value: g, unit };
    figures.push(figure(l, peer));
    // Every unit here is time per operation or per program: speedup = time at 1 / time at w.
    const speed = (one: number | undefined, v: number | undefined) =>
      one === undefined || v === undefined ? "" : `${(one / v).toFixed(2)}x`;
    console.log(
      `    ${String(w).padStart(7)} ${l.value.toFixed(2).padStart(10)} ${
        (g?.toFixed(2) ?? "n/a").padStart(10)
      } ` +
        `${(g === undefined ? "" : (l.value / g).toFixed(3)).padStart(7)} ` +
        `${speed(base, l.value).padStart(14)} ${speed(goBase, g).padStart(11)}`,
    );
  }
}
await save("scaling", figures);
const md = `On ${cpus} CPUs, ${new Date().toISOString().slice(0, 10)}:\n\n${
  scalingMarkdown(figures)
}`;
await Deno.writeTextFile(`${root}bench/results/scaling.md`, md);
console.log(
  `\n${md}\nwrote bench/results/scaling.json and scaling.md (the README's scaling table)`,
);

// bench/table.ts: the README's table of figures is generated from a bench run's results.
import assert from "node:assert/strict";
import { markdown, num, ratio, rows, scalingMarkdown, scalingPairs } from "../bench/table.ts";
import { ACTOR_DEADLINE, ACTOR_PLAIN, actorFigures } from "../bench/common.ts";

Deno.test("bench table: a run without results gives every row, each n/a, without throwing", () => {
  const rs = rows(new Map());
  assert.ok(rs.length > 40, `only ${rs.length} rows`);
  for (const r of rs) assert.equal(r.kcoro, "n/a", r.label);
});

Deno.test("bench table: numbers and ratios as the README writes them", () => {
  assert.equal(num(1.916), "1.92");
  assert.equal(num(57.65), "57.6");
  assert.equal(num(167.86), "168");
  assert.equal(num(4192.47), "4,192");
  assert.equal(ratio(0.0217), "0.022");
  assert.equal(ratio(0.523), "0.52");
  assert.equal(ratio(14.38), "14.4");
});

Deno.test("bench table: the README's table has the generator's rows, in its order", async () => {
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const start = readme.indexOf("| figure ");
  assert.ok(start >= 0, "README has no table of figures");
  const lines = readme.slice(start).split("\n");
  const table = lines.slice(0, lines.findIndex((l) => !l.startsWith("|")));
  const labels = table.slice(2).map((l) => l.split("|")[1].trim());
  assert.deepEqual(labels, rows(new Map()).map((r) => r.label));
  // The generator pads as `deno fmt` does: its output for a run is the README's table.
  const generated = markdown(rows(new Map())).trimEnd().split("\n");
  assert.equal(generated.length, table.length);
});

Deno.test("bench table: the README's scaling table has the generator's rows and columns", async () => {
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const start = readme.indexOf("| figure ", readme.indexOf("**Scaling with the worker count**"));
  assert.ok(start >= 0, "README has no scaling table");
  const lines = readme.slice(start).split("\n");
  const table = lines.slice(0, lines.findIndex((l) => !l.startsWith("|")));
  assert.deepEqual(
    table.slice(2).map((l) => l.split("|")[1].trim()),
    scalingPairs.map((p) => p.label),
  );
  // A run on the README's machine (its worker counts) gives the same columns.
  const generated = scalingMarkdown(
    [1, 2, 4, 8, 16].map((w) => ({
      name: `${scalingPairs[0].kcoro} (${w} worker${w === 1 ? "" : "s"})`,
      value: 1,
      unit: "ns/spawn",
      peer: null,
      peer_value: null,
      ratio: null,
    })),
  ).trimEnd().split("\n");
  assert.equal(generated[0].split("|").length, table[0].split("|").length);
  assert.deepEqual(
    generated[0].split("|").map((c) => c.trim()),
    table[0].split("|").map((c) => c.trim()),
  );
});

Deno.test("bench table: the native actor's rows read the Zig bench executable's actor figures from the scheduler's suite, the deadline's against the plain one", async () => {
  // bench/run.ts files them in sched.json (`actorFigures`); before, they fell among the context
  // switch's figures and no row read them. The names are those bench/native/bench.zig prints.
  const zig = await Deno.readTextFile(new URL("../bench/native/bench.zig", import.meta.url));
  for (const name of [ACTOR_PLAIN, ACTOR_DEADLINE]) {
    assert.ok(zig.includes(`"${name}"`), `bench.zig prints no "${name}"`);
  }
  const unit = "ns/message";
  const figures = actorFigures([
    { name: "sched: spawn + run to completion (2 workers)", value: 16, unit: "ns/spawn" },
    { name: ACTOR_DEADLINE, value: 75, unit },
    { name: ACTOR_PLAIN, value: 60, unit },
  ]);
  assert.deepEqual(figures.map((f) => [f.name, f.peer, f.ratio]), [
    [ACTOR_PLAIN, null, null],
    [ACTOR_DEADLINE, ACTOR_PLAIN, 1.25],
  ]);
  const rs = rows(new Map([["sched", figures]]));
  assert.deepEqual(rs.filter((r) => r.label.startsWith("actor message")), [
    {
      label: "actor message (self-fed conflated mailbox, 1 worker)",
      kcoro: "60.0 ns",
      peer: "",
      ratio: "",
    },
    {
      label: "actor message with a context deadline, against without",
      kcoro: "75.0 ns",
      peer: "60.0 ns without a deadline",
      ratio: "1.25",
    },
  ]);
  // Not the switch suite's: a run's other native lines leave them out (bench/run.ts).
  assert.deepEqual(
    actorFigures([{ name: "switch (callee-saved regs)", value: 2, unit: "ns" }]),
    [],
  );
});

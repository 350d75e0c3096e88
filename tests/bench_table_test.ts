// bench/table.ts: the README's table of figures is generated from a bench run's results.
import assert from "node:assert/strict";
import { markdown, num, ratio, rows } from "../bench/table.ts";

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

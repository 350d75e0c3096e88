// Structured values through a shared channel (packed into native memory and back, src/pack.ts)
// against node:v8, which such values took before the packer copied Maps and typed arrays.
// A file of its own, so that these codecs' code cannot change what V8 makes for the figures of
// bench/channel_bench.ts. Run by `./task bench` (bench/run.ts, suite "channel"), or alone:
//   deno bench --allow-ffi --allow-read --allow-env bench/structured_bench.ts
import { Channel } from "../mod.ts";
import v8 from "node:v8";
// A record with a Map and a typed array: the pair through a shared channel, against what
// node:v8 alone costs for the same value (serialize + deserialize, no channel).
const record = { id: 7, index: new Map([["a", 1], ["b", 2]]), samples: new Float64Array(16) };
const structuredShared = new Channel<unknown>(64);
structuredShared.share();
Deno.bench(
  "trySend + tryReceive pair, default codec ({ Map, Float64Array }), shared channel (native)",
  { group: "structured" },
  () => {
    structuredShared.trySend(record);
    structuredShared.tryReceive();
  },
);
Deno.bench(
  "node:v8 serialize + deserialize of the same value (no channel)",
  { group: "structured", baseline: true },
  () => {
    v8.deserialize(v8.serialize(record));
  },
);

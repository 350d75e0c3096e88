// Context.with / get / without at 1, 8, 64 and 8,000 keys: `deno bench --allow-all
// bench/context_bench.ts` (`--filter "with, 8 keys"` for one row). A context of up to 16 keys
// holds its entries in a Map, copied by each change; a larger one in a hash array mapped trie,
// each change copying one path (O(log n)). Before, every change copied a Map of all the
// entries: at 8,000 keys ~1 ms a `with`, 1.6 s to build such a context one `with` at a time.
import { Context, type ContextKey, createContextKey } from "../mod.ts";

/** A context of `n` keys (each set to its index), its keys, and one key it does not hold. */
function made(n: number): { ctx: Context; keys: ContextKey<number>[]; extra: ContextKey<number> } {
  const keys = Array.from({ length: n }, (_, i) => createContextKey<number>(`k${i}`));
  let ctx = Context.empty;
  for (const [i, k] of keys.entries()) ctx = ctx.with(k, i);
  return { ctx, keys, extra: createContextKey<number>("extra") };
}

for (const n of [1, 8, 64, 8_000]) {
  const { ctx, keys, extra } = made(n);
  let i = 0;
  Deno.bench(
    `Context.with, ${n} keys: one of its keys, a new value`,
    { group: `with ${n}` },
    () => {
      ctx.with(keys[i++ % n], -1);
    },
  );
  Deno.bench(`Context.with, ${n} keys: a key it lacks`, { group: `add ${n}` }, () => {
    ctx.with(extra, i++);
  });
  Deno.bench(`Context.get, ${n} keys`, { group: `get ${n}` }, () => {
    ctx.get(keys[i++ % n]);
  });
  Deno.bench(`Context.without, ${n} keys`, { group: `without ${n}` }, () => {
    ctx.without(keys[i++ % n]);
  });
}

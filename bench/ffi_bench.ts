// Deno-side costs of the boundary: the FFI call floor, and driving a native coroutine from JS.
// Run by `./task bench` (bench/run.ts), or alone: deno bench --allow-ffi --allow-read --allow-env bench/ffi_bench.ts
import { library, NativeCoroutine } from "../mod.ts";

const sym = library().symbols("bench");
const co = NativeCoroutine.create("yield-loop");
const raw = NativeCoroutine.create("yield-loop");
const handle = raw.handle;

Deno.bench("ffi call floor: kc_abi_version()", { group: "ffi", baseline: true }, () => {
  sym.kc_abi_version();
});

Deno.bench("ffi: kc_coro_resume (resume + yield of a native coroutine)", { group: "ffi" }, () => {
  sym.kc_coro_resume(handle);
});

Deno.bench("NativeCoroutine.resume() (checked wrapper)", { group: "ffi" }, () => {
  co.resume();
});

globalThis.addEventListener("unload", () => {
  co.destroy();
  raw.destroy();
});

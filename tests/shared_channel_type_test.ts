// SharedChannel<T>: share() keeps the channel's element type, Channel.from infers it, and a
// SharedChannel of another element type is a type error; a plain SharedChannel (of unknown,
// what a message's type usually says) is still taken for any. Checked by `deno check` (./task
// check covers tests/) and by `deno test`, which type-checks this file before it runs it: an
// unused @ts-expect-error is an error too. The brand is type only: at run time share() returns
// the same seven plain fields, which structuredClone copies as they are.
import assert from "node:assert/strict";
import { Channel, type SharedChannel } from "../mod.ts";

/** True when A and B are the same type (not merely assignable). */
type Equal<A, B> = (<X>() => X extends A ? 1 : 2) extends <X>() => X extends B ? 1 : 2 ? true
  : false;
function expectType<_ extends true>(): void {}

/** Type checks only: never called (no channel is made). */
function typeChecks(numbers: Channel<number>, words: Channel<string>, plain: SharedChannel): void {
  const n = numbers.share();
  expectType<Equal<typeof n, SharedChannel<number>>>();
  const copy = Channel.from(n);
  expectType<Equal<typeof copy, Channel<number>>>();
  expectType<Equal<ReturnType<typeof Channel.from<string>>, Channel<string>>>();

  const s: SharedChannel<string> = words.share();
  // @ts-expect-error a SharedChannel<string> is not a SharedChannel<number>
  const wrong: SharedChannel<number> = s;
  // @ts-expect-error nor does Channel.from<number> take it
  Channel.from<number>(s);
  // @ts-expect-error a Channel<string>'s share() where a SharedChannel<number> is expected
  const message: { ch: SharedChannel<number> } = { ch: words.share() };

  // A plain SharedChannel (a message's field, typed before the element type was known) is taken
  // for any element type, and any SharedChannel<T> is one.
  const asNumbers: Channel<number> = Channel.from<number>(plain);
  const field: { ch: SharedChannel } = { ch: numbers.share() };
  const back: SharedChannel<number> = plain;
  void [wrong, message, asNumbers, field, back];
}
void typeChecks;

Deno.test("SharedChannel<T> is a type-only brand: share() returns the same plain, cloneable fields", () => {
  using ch = new Channel<number>(2);
  const shared: SharedChannel<number> = ch.share();
  assert.deepEqual(Object.keys(shared).sort(), [
    "capacity",
    "codec",
    "elemSize",
    "handle",
    "kind",
    "library",
    "version",
    "zeroCopy",
  ]);
  assert.equal(Object.getOwnPropertySymbols(shared).length, 0);
  const cloned = structuredClone(shared);
  assert.deepEqual(cloned, { ...shared });
  using copy = Channel.from(cloned);
  assert.equal(ch.trySend(5).state, "ok");
  assert.deepEqual(copy.tryReceive(), { state: "ok", value: 5 });
});

/**
 * How kcoro's objects print in `console.log` and `Deno.inspect`: each public class has a
 * `[Symbol.for("Deno.customInspect")]` method on its prototype that prints its class name and a
 * few facts read from JavaScript state (or a native read that returns a status, never one that
 * throws), so a disposed channel or a closed library prints too. The `_notCloneable` field that
 * makes structured cloning fail with advice stays an own enumerable field; it is only not shown.
 *
 * Deno calls the method as `obj[customInspect](inspect, options)`: `inspect` is Deno.inspect,
 * `options` the call's options (colors, depth, ...), which we pass on so that the facts print in
 * the caller's style. A method only, on the prototype: nothing on any other path.
 * @module
 */

/** The symbol Deno's console and `Deno.inspect` look for (a registered symbol, any realm's). */
export const customInspect: unique symbol = Symbol.for("Deno.customInspect");

/**
 * `name { ...facts }` in Deno's style: `inspect` and `options` are what Deno passed to the custom
 * inspect method; without an `inspect` function (a caller of its own) the facts print as JSON.
 */
export function inspectAs(
  name: string,
  facts: Record<string, unknown>,
  inspect: unknown,
  options: unknown,
): string {
  if (Object.keys(facts).length === 0) return `${name} {}`;
  const body = typeof inspect === "function"
    ? String(inspect(facts, options))
    : JSON.stringify(facts);
  return `${name} ${body}`;
}

/**
 * What a hook prints for a receiver that is none of its class (an object made from the prototype
 * with `Object.create`, a Proxy of an instance, the hook called on another value or a primitive):
 * `Channel <not a Channel>`, `Actor <not an Actor>`, as `Context`'s does. Inspection never throws;
 * the hook's first private read threw the engine's TypeError ("Cannot read private member ...") out
 * of `console.log`. Each hook tells its own by a private brand check on `Object(this)` (an object
 * is itself, a primitive a wrapper with no private field, `null`/`undefined` a fresh `{}`), which
 * runs no Proxy trap.
 */
export function notA(name: string): string {
  return `${name} <not ${/^[AEIOU]/.test(name) ? "an" : "a"} ${name}>`;
}

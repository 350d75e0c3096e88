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
 * inspect method, each fact's value printed with them (without an `inspect` function, a caller of
 * its own, as JSON). A fact's key is a property of the object printed, with the value that
 * property reads (`isRunning: true`, `codec: Codec { name: "default" }`), so that what a user reads
 * is what a user can write; a fact no property gives is keyed `[[name]]`, the notation of the
 * spec's internal slots (`[[capacity]]: 4`), which no property read can name. Before, a Runtime
 * printed `running: true` (its property is `isRunning`; `rt.running` is undefined) and a Channel
 * `closed: false, native: false`, neither of them a property of it.
 */
export function inspectAs(
  name: string,
  facts: Record<string, unknown>,
  inspect: unknown,
  options: unknown,
): string {
  const show = typeof inspect === "function"
    ? (v: unknown) => String(inspect(v, options))
    : showPlain;
  const parts = Object.entries(facts).map(([k, v]) => `${k}: ${show(v)}`);
  return parts.length === 0 ? `${name} {}` : `${name} { ${parts.join(", ")} }`;
}

/**
 * A fact's value printed without Deno's `inspect` (a caller of its own): as JSON, and what JSON
 * has no text for as Deno prints it: a function `[Function: name]` (`[Function (anonymous)]`,
 * `[AsyncFunction: name]`, a class `[class Name]`), a bigint `1n`, a symbol `Symbol(q)`,
 * `undefined`. Before, `String(v)` printed a function's whole source, and a bigint, which JSON
 * refuses, `[object BigInt]`. Never a throw: what JSON refuses (a cycle, a `toJSON` that throws, an
 * object holding a bigint) prints its tag (`[object Object]`).
 */
function showPlain(v: unknown): string {
  if (typeof v === "function") return functionTag(v);
  if (typeof v === "bigint") return `${v}n`;
  if (typeof v === "symbol" || v === undefined) return String(v);
  // A channel's codec is an object: its tag, should JSON refuse it (never a throw).
  try {
    return JSON.stringify(v) ?? Object.prototype.toString.call(v);
  } catch {
    return Object.prototype.toString.call(v);
  }
}

/** The prototypes of the function kinds Deno names apart (`[AsyncFunction: f]`). */
const FUNCTION_KINDS: readonly [object, string][] = [
  [Object.getPrototypeOf(async function () {}), "AsyncFunction"],
  [Object.getPrototypeOf(function* () {}), "GeneratorFunction"],
  [Object.getPrototypeOf(async function* () {}), "AsyncGeneratorFunction"],
];

/**
 * `[Function: name]` as Deno prints a function (`[AsyncFunction: name]`, `[GeneratorFunction:
 * name]`, `[AsyncGeneratorFunction: name]` by its prototype, `[class Name]` a class), read without
 * running the function's code: its `name` by an own data property only (a getter of the caller's
 * is not run), its source (to tell a class) by `Function.prototype.toString`, which a Proxy or a
 * bound function answers without a trap; a Proxy's trap that throws (its `getOwnPropertyDescriptor`
 * or `getPrototypeOf`) leaves what was read so far.
 */
function functionTag(f: object): string {
  let name = "";
  let kind = "Function";
  try {
    const d = Object.getOwnPropertyDescriptor(f, "name");
    if (d !== undefined && "value" in d && typeof d.value === "string") name = d.value;
    if (/^class\b/.test(Function.prototype.toString.call(f))) kind = "class";
    else {
      const proto = Object.getPrototypeOf(f);
      kind = FUNCTION_KINDS.find(([p]) => p === proto)?.[1] ?? kind;
    }
  } catch {
    // A Proxy's trap that threw: what was read so far.
  }
  if (kind === "class") return name === "" ? "[class (anonymous)]" : `[class ${name}]`;
  return name === "" ? `[${kind} (anonymous)]` : `[${kind}: ${name}]`;
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

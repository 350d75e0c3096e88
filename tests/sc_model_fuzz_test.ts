// Model-based differential fuzz of the structured-concurrency layer (src/job.ts, src/scope.ts,
// src/time.ts, select's onJoin/onAwait, src/produce.ts, src/actor.ts) through the public API. A
// reference model of the semantics (shared/DESIGN.md section 5; README "Structured
// concurrency", "Select from TypeScript" and "Producers, actors and native scopes": Kotlin's
// job states and flag table, failure up / cancellation down, the first failure wins, supervisors,
// free-standing scopes, lazy jobs, withTimeout(OrNull), nonCancellable, invokeOnCompletion and
// the exception handler, produce's close cause, actor's onDone) runs beside random trees of real
// scopes and tasks. Every block is a script the test drives: it waits on a gate (a promise the
// test resolves) for its next step (return a value, throw an Error, a string or a
// CancellationError, rethrow what its last wait failed with, join or await a job, select over
// onJoin/onAwait, run a nested scope, send on its produced channel, receive from its mailbox);
// one block in ten returns or throws at once instead. From outside the test launches children
// (eager or lazy, launch, async, produce, actor; a launch or async in five given a context: the
// empty one or one with a handler of its own) into any scope it holds, final ones too, cancels
// jobs with or without a cause, aborts a root's signal, starts lazy jobs, completes a
// CompletableDeferred, adds and removes completion handlers (some throw, cancel or start a job
// when they run), makes free-standing scopes children of a job (`createScope({ parent })`: a third
// of those made at the root, and in place of a launch one time in ten, the parent one time in three
// a deferred that has a parent of its own; the parent's handler and Deadline inherited, sometimes a
// signal of their own), joins or disposes free-standing scopes, fires the timer of a withTimeout,
// starts scopes given only the context of a task or scope (mostly one under a withTimeout still
// running, so that a timeout nests in it unawaited: ended by its timer, failing at once once it
// fired, rejoining the nearest outer still running or handed a timer of its own when the one it is
// nested in finishes first; or whose own shorter time comes first, replacing the Deadline in
// force, which is in force again in its contexts once it has finished; KCORO_SC_STATS=1 counts
// each), builds chains of such nested timeouts and makes their middle return first (before,
// the default seeds rejoined an outer twice at most and drew no inner whose own time came first:
// a timeout that did not restore the Deadline it replaced, or never rejoined, passed), sends to
// (send, trySend) and closes an actor's mailbox. A scope call follows the signal of the block it
// runs in, or one time in three (at the root, one in six) another job's: a sibling's, a cousin's
// in another branch, an ancestor's, one already final (`Run.followTarget`), so that a cancel
// reaches it across the tree, where before it only came down the tree the call runs in; so does
// a free-standing scope made at the root one time in six (`createScope({ signal })`). Half the
// blocks are cooperative (each wait races the task's signal, as Kotlin's suspension points do),
// half ignore cancellation and run on; the exception handlers of some contexts throw.
//
// After each step the test settles microtasks in a bounded loop (no sleeps) and compares, for
// every job: its state and flags, its children (oldest first), the cause its completion handlers
// see and what a child's see of its parent (the child no longer among its `children`; a parent
// that waits for it not finished before its last handler), an async's await() (the same error object each time), the live handler count, a failure's
// `suppressed` list; for every block: where it is, what each wait gave, the reason its signal
// ended it with, whether its context has a Deadline; for every scope call: its outcome; for
// produce: whether its channel is closed yet (the moment of the close against the job's state:
// at once at a cancellation, children of the job maybe still running; as the job is final for a
// return or a failure), what it holds and its close cause; and the completion handlers run (one
// job's in the order added, a job's before its parent's), the failures reported (to the
// CoroutineExceptionHandler in the context, or reportError), actor's onDone and undelivered
// messages, the timers armed; an eager block must have started inside launch. Errors the library
// makes are matched by class and cause, and bound on first sight: from then on the same model
// error must be the same object.
//
// Time is a controlled clock: timers of exactly FAKE_MS or SHORT_MS (the only lengths this test
// asks for) are taken out of setTimeout and fired by the test, and so are those a nested timeout
// is handed for the rest of the time of the withTimeout that finished before it (a little less;
// compared per step, as a group, until one fires and so tells whose it is); other timeouts are 0
// or negative (fail at once). A TimeoutError must say its own timeout's ms.
//
// Seeded (KCORO_SC_SEED=n or a-b), bounded in steps (KCORO_SC_STEPS, 150), jobs (KCORO_SC_JOBS,
// 60) and time per seed (KCORO_SC_MS, 2,000); a failure prints its seed and the steps that led
// to it (the last 60, or KCORO_SC_TAIL; replay with the same knobs). The default run (seeds
// 1-24) adds pinned seeds at 300 steps and 120 jobs, not bounded in time (PINNED, below), unless
// KCORO_SC_STEPS or KCORO_SC_JOBS is given.
//
// Points the model had to settle where the documentation is silent (kcoro's behaviour taken):
// - a failure reaching a job that is already cancelling (a cancellation) replaces its cause and
//   goes on up at once (Kotlin hands it to the parent when the job finishes); the job's signal
//   keeps the reason it aborted with;
// - a child launched into a scope that is completing (its block returned, children still run)
//   is accepted and waited for;
// - the order in which completion handlers of different jobs run within one step is compared
//   only as "a job's before its parent's"; the set and the causes are compared exactly;
// - a wait that could end by itself in the step that cancels its (cooperative) block may give
//   its result before the block sees its signal, or not: the event loop's order, not a rule;
// - which clause of a select wins when several of its jobs finish in one step: any of them;
// - a nested withTimeout that finishes in the step its outer finishes in: handed a timer (armed,
//   then cleared) or not, as the event loop orders the two ends;
// - a handler disposed by another handler of the same job while the job completes (it does
//   not run: tests/job_test.ts) is never drawn: the model's handlers do not dispose others;
// - an actor whose mailbox was closed and which then fails or is cancelled: its mailbox keeps
//   the close (no cause), and a send before the actor is final rejects with a ClosedSendError,
//   the channel's rule for a cancel after a close (the first cause wins, as Kotlin's); a
//   trySend's closed result carries one too (a closed result carries what a send rejects with).
import {
  actor,
  CancellationError,
  type Channel,
  ClosedSendError,
  CompletableDeferred,
  CompletionHandlerError,
  Context,
  CoroutineExceptionHandler,
  type CoroutineScope,
  coroutineScope,
  createScope,
  Deadline,
  type Deferred,
  type Job,
  type JobState,
  nonCancellable,
  produce,
  type Scope,
  select,
  supervisorScope,
  TimeoutError,
  withTimeout,
  withTimeoutOrNull,
} from "../mod.ts";
import { prng } from "./support.ts";
import { producerJobOf } from "../src/produce.ts";
import { handlerCountOf, type JobSupport } from "../src/job.ts";

// ---------------------------------------------------------------------------------------------
// Errors: those the test makes are known objects; those the library makes are symbols, matched
// by class and cause and bound to the real object on first sight.

type ErrCls =
  | "Error"
  | "CE"
  | "Timeout"
  | "CHE"
  | "TypeError"
  | "ClosedSend"
  | "DOMException"
  | "Aggregate";

class Sym {
  bound = false;
  real: unknown = undefined;
  constructor(
    readonly cls: ErrCls,
    readonly label: string,
    readonly cause?: Sym,
    known?: { obj: unknown },
    /** Aggregate: what its `errors` hold. */
    readonly parts?: Sym[],
  ) {
    if (known !== undefined) {
      this.bound = true;
      this.real = known.obj;
    }
  }
  get isCancellation(): boolean {
    return this.cls === "CE" || this.cls === "Timeout";
  }
  toString(): string {
    return `${this.cls}(${this.label}${this.cause ? ` <- ${this.cause}` : ""})`;
  }
}

function describeReal(e: unknown): string {
  if (e instanceof Error) {
    const c = (e as { cause?: unknown }).cause;
    return `${e.name}(${lbl(e)}${c !== undefined ? ` <- ${describeReal(c)}` : ""})`;
  }
  return String(e);
}

function classOk(sym: Sym, real: unknown): boolean {
  return sym.cls === "Timeout"
    // The timeout's own, of its `ms` (its label): not another one's.
    ? real instanceof TimeoutError && real.message.includes(` ${sym.label} ms`)
    : sym.cls === "CE"
    ? real instanceof CancellationError && !(real instanceof TimeoutError)
    : sym.cls === "CHE"
    ? real instanceof CompletionHandlerError
    : sym.cls === "TypeError"
    ? real instanceof TypeError
    : sym.cls === "ClosedSend"
    ? real instanceof ClosedSendError
    : sym.cls === "DOMException"
    ? real instanceof DOMException
    : sym.cls === "Aggregate"
    ? real instanceof AggregateError && real.errors.length === sym.parts!.length &&
      sym.parts!.every((p, i) => matchErr(p, real.errors[i]) === null)
    : real instanceof Error;
}

/** Null if `real` is what `sym` stands for (binding it on first sight), else why not. */
function matchErr(sym: Sym | undefined, real: unknown): string | null {
  if (sym === undefined) {
    return real === undefined ? null : `expected no error, got ${describeReal(real)}`;
  }
  if (sym.bound) {
    return real === sym.real ? null : `expected ${sym} (bound), got ${describeReal(real)}`;
  }
  const ok = classOk(sym, real);
  if (!ok) return `expected ${sym}, got ${describeReal(real)}`;
  if (sym.cause !== undefined) {
    const why = matchErr(sym.cause, (real as { cause?: unknown }).cause);
    if (why !== null) return `cause of ${sym}: ${why}`;
  }
  sym.bound = true;
  sym.real = real;
  return null;
}

// ---------------------------------------------------------------------------------------------
// The model.

const NEW = 0, ACTIVE = 1, COMPLETING = 2, CANCELLING = 3, CANCELLED = 4, COMPLETED = 5;
const STATES: JobState[] = ["new", "active", "completing", "cancelling", "cancelled", "completed"];
/** Kotlin's flag table: [isActive, isCompleted, isCancelled] per state. */
const FLAGS: [boolean, boolean, boolean][] = [
  [false, false, false],
  [true, false, false],
  [true, false, false],
  [false, false, true],
  [false, true, true],
  [false, true, false],
];

type Kind = "launch" | "async" | "root" | "standalone" | "produce" | "actor" | "completable";
type RootKind =
  | "coroutineScope"
  | "supervisorScope"
  | "withTimeout"
  | "withTimeoutOrNull"
  | "nonCancellable";

type Outcome = { ok: true; value: unknown } | { ok: false; err: Sym };

type Wait =
  | { kind: "join"; target: MJob; signal: boolean }
  | { kind: "await"; target: MJob; signal: boolean }
  | {
    kind: "select";
    clauses: { job: MJob; await: boolean }[];
    signal: boolean;
    won?: { clause: number; candidates: number[] };
    armed?: boolean; // its completion handlers were added (no clause was ready at once)
  }
  | { kind: "scope"; scope: MJob }
  | { kind: "send"; value: number; err?: Sym }
  | { kind: "receive" };

interface MHandler {
  id: number;
  job: MJob;
  throws: unknown; // undefined: returns
  cancels?: MJob; // cancels this job (no cause) when it runs
  starts?: MJob; // starts this job when it runs
  live: boolean;
}

class MJob {
  state = NEW;
  bodyDone = false;
  value: unknown = undefined;
  cause: Sym | undefined = undefined;
  failed = false;
  handled = false;
  cancelErr: Sym | undefined = undefined;
  parent: MJob | null = null;
  /** Parent at attach time (kept after it finishes, for the handler-order check). */
  origParent: MJob | null = null;
  children: MJob[] = [];
  handlers: MHandler[] = [];
  /** Handlers of the library's own on this job (a waiting select, join/await with a signal). */
  internal = 0;
  /** Nested scopes that follow this job's signal. */
  followers: MJob[] = [];
  signalRead = false;
  abortReason: Sym | undefined = undefined;
  // the block
  hasBody: boolean;
  coop = false;
  body: "none" | "idle" | "waiting" | "done" = "none";
  wait: Wait | undefined = undefined;
  results: string[] = [];
  /** A cooperative block ended by its signal: the reason it threw. */
  abortedWith: Sym | undefined = undefined;
  checkedAbort = false;
  /** Its context holds a Deadline (a withTimeout's, inherited; nonCancellable drops it). */
  deadline = false;
  /** The step in which it started cancelling. */
  cancelStep = -1;
  /** The step in which a wait of its block last gave its result (`Model.resume`). */
  resultStep = -1;
  /** Started cancelling with others whose walks have not all run: not finished meanwhile. */
  held = false;
  /**
   * Children that left its list while it was already waiting for them (body done) and still run
   * their handlers: it does not finish meanwhile (Kotlin's ChildCompletion).
   */
  leaving = 0;
  /** A block that returns `value` or throws `err` at once, without awaiting. */
  instant: { value?: number; err?: Sym; real?: unknown } | undefined = undefined;
  // roots
  rootKind: RootKind | undefined = undefined;
  owner: MJob | null = null; // the block a nested scope runs in
  following: MJob | null = null;
  timer = false; // a fake timer armed
  timeout: Sym | undefined = undefined; // its own timeout's error (withTimeoutOrNull: null)
  /**
   * The withTimeout whose Deadline record its context holds (launches inherit it; nonCancellable
   * drops it): its own, also one nested in another's; one still running ends the timeouts nested
   * in it.
   */
  timedBy: MJob | null = null;
  /** A withTimeout whose Deadline came first: it ends this one (nested under it), or null. */
  under: MJob | null = null;
  /**
   * A withTimeout's: the length (ms) of the timeout whose Deadline it carries, its own or the one
   * it is nested in (FAKE_MS or SHORT_MS: a SHORT_MS one started later still comes first).
   */
  len = 0;
  /**
   * A withTimeout whose own time came before the Deadline in force in the context it was given:
   * the record that Deadline was in force through (src/context.ts `Timeout.replaced`, the source
   * context's), in force again in its contexts once it has finished; a nested one has that of the
   * one it is nested in. Null: none (no Deadline was in force).
   */
  replaced: MJob | null = null;
  /** A withTimeout's: the running timeouts nested under it, in the order they came. */
  nested: MJob[] = [];
  /** A withTimeout's: those nested under it that finished (left `nested`), with the step. */
  leftNested: { n: MJob; step: number }[] = [];
  /** A withTimeout's: what its Deadline ends it with (its own timeout's, or `under`'s). */
  expiresWith: Sym | undefined = undefined;
  /**
   * Nested under a withTimeout that finished first: the error the timer it was handed for the
   * rest of that one's time cancels it with (`timer` says whether that timer is armed).
   */
  handover: Sym | undefined = undefined;
  /** Its hand-over timer among those armed in one step (`Run.attributeHandovers`). */
  handoverGroup: HandoverGroup | undefined = undefined;
  fired = false; // a withTimeout's Deadline was reached (its timer, or the one it is nested in)
  outcome: Outcome | undefined = undefined; // a scope call's, once settled
  refused = false; // never made a job (timeout <= 0, signal aborted)
  // free-standing scopes: join() / asyncDispose() calls, resolved once final
  sjoins = 0;
  // produce / actor
  sent: number[] = []; // produce: values sent (unlimited capacity), actor: queued messages
  received: number[] = []; // actor: messages the handler received
  closed = false; // actor: close() called
  mailboxCause: Sym | undefined = undefined; // actor: what its mailbox was cancelled with
  closeSet = false; // produce: the channel closed, with closeCause
  closeCause: Sym | undefined = undefined;
  /**
   * produce: the job's state as its channel closed ("cancelling, 2 children running", "cancelled"),
   * for the trace and the stats: the checks compare whether the channel is closed after every
   * step, against the job's state then (`Run.diff`).
   */
  closedWhile = "";
  drained = false; // produce: the test read the channel out once closed
  doneCalls: (Sym | undefined)[] = []; // actor: onDone causes
  constructor(
    readonly id: number,
    readonly kind: Kind,
    readonly ceh: number | null, // the root whose CoroutineExceptionHandler the context holds
    readonly supervisor: boolean,
  ) {
    this.hasBody = kind !== "standalone" && kind !== "completable";
  }
  /**
   * A free-standing scope made with a `parent` (`Run.standaloneChild`) whose failure is seen
   * above it (`takesFailure`): the scope then takes its children's failures too (src/job.ts
   * `parentTakesFailure`), so a failed launch in it is not reported by the launch.
   */
  parentTakes = false;
  /**
   * Whether a failure that a child of this job's fails with is rethrown or reported above it
   * without that child's report: it reaches this job (no supervisor) and, passed up from job to
   * job below no supervisor, comes to one that takes children's failures (`handles`) or reports
   * its own (`reports`). A free-standing scope that takes none passes its own on to its parent:
   * asking only the parent made a scope under such a scope under a task report the failure in its
   * launch and again in the task (a CompletableDeferred did so too until it took its children's
   * failures).
   */
  get takesFailure(): boolean {
    if (this.supervisor) return false;
    // deno-lint-ignore no-this-alias -- k walks up from this job
    for (let k: MJob = this;;) {
      if (k.handles || k.reports) return true;
      const p = k.parent;
      if (p === null || p.supervisor) return false;
      k = p;
    }
  }
  get handles(): boolean {
    // A CompletableDeferred takes its children's failures (its await rejects with one), as
    // Kotlin's CompletableDeferredImpl does.
    if (this.kind === "standalone") return this.parentTakes;
    return true;
  }
  get reports(): boolean {
    return this.kind === "launch" || this.kind === "produce" || this.kind === "actor";
  }
  get cancelCompletes(): boolean {
    return this.kind === "standalone" || this.kind === "completable";
  }
  get final(): boolean {
    return this.state >= CANCELLED;
  }
  finalCause(): Sym | undefined {
    return this.state === COMPLETED ? undefined : this.cause;
  }
  toString(): string {
    return `#${this.id}`;
  }
}

/**
 * The hand-over timers armed in one step and the nested timeouts they were armed for: which is
 * whose is told only as one fires (the scope it cancels), since timeouts that finished in one
 * step hand theirs over in the order the library finished them.
 */
interface HandoverGroup {
  ids: number[];
  members: MJob[];
}

interface Event {
  kind: "handler" | "report" | "onDone" | "undelivered";
  handler?: number;
  job?: number;
  tag?: string; // report: "ceh#root" or "report"
  err?: Sym;
  value?: number;
  /**
   * handler: what it must see of its job's parent (`seenFromHandler`), where the model knows:
   * "in children: false, parent completed: false" for a child that left its parent's list as it
   * finished (unlinked before its handlers; a parent waiting for it finishes only after its last
   * handler); undefined where the parent's end may fall either side of the handler in one step.
   */
  seen?: string;
}

/** What a completion handler of a child sees of its parent (the model's `Event.seen`). */
function seenFromHandler(inChildren: boolean, parentCompleted: boolean): string {
  return `in children: ${inChildren}, parent completed: ${parentCompleted}`;
}

class Model {
  jobs: MJob[] = [];
  /** The test's step: a wait that ends in the step that cancels its block races it. */
  step = 0;
  events: Event[] = [];
  /** Bodies whose microtask continuation is pending: the model runs them after the step. */
  dirty = true;
  /** Nested timeouts handed a timer of their own whose real timer is not attributed yet. */
  handovers: MJob[] = [];

  /**
   * `top`'s Deadline is reached (its timer, or the one it was handed): its own scope, then the
   * timeouts nested under it, oldest first (one a cancel here finished has left, and the ones
   * nested in it that had not fired have joined), each followed by the ones nested in it, also
   * when a cancel finished the one they are nested in (fired first: it leaves them to this).
   */
  expire(top: MJob, nested = false) {
    if (nested) {
      count("timeout nested: cancel by the outer's timer");
      if (top.state < CANCELLING) count("timeout nested: cancel by the outer's timer, first");
    }
    top.fired = true;
    this.cancel(top, top.expiresWith!);
    // Its set live, as a Set iterates: one that left is skipped, one that joined (rejoined from
    // one a cancel here finished) is reached.
    const seen = new Set<MJob>();
    for (let n; (n = top.nested.find((x) => !seen.has(x))) !== undefined;) {
      seen.add(n);
      this.expire(n, true);
    }
    top.nested = [];
  }

  toCancellation(cause: Sym | undefined): Sym {
    if (cause === undefined) return new Sym("CE", "Cancelled");
    if (cause.isCancellation) return cause;
    return new Sym("CE", "wrap", cause);
  }

  childCancel(j: MJob): Sym {
    if (!j.failed) return j.cause!;
    return j.cancelErr ??= new Sym("CE", `failed ${j}`, j.cause);
  }

  signalReason(j: MJob): Sym | undefined {
    j.signalRead = true;
    if (j.abortReason === undefined && j.state >= CANCELLING && j.state !== COMPLETED) {
      j.abortReason = this.childCancel(j);
    }
    return j.abortReason;
  }

  /** The CoroutineExceptionHandlers that throw (by root), with what they throw. */
  cehThrows = new Map<number, Sym>();

  report(ctxRoot: number | null, err: Sym) {
    this.events.push({ kind: "report", tag: ctxRoot === null ? "report" : `ceh#${ctxRoot}`, err });
    const thrown = ctxRoot === null ? undefined : this.cehThrows.get(ctxRoot);
    if (thrown !== undefined) {
      // reported with what it was handling
      this.events.push({
        kind: "report",
        tag: "report",
        err: new Sym("Aggregate", "CoroutineExceptionHandler threw", undefined, undefined, [
          err,
          thrown,
        ]),
      });
    }
  }

  start(j: MJob): boolean {
    if (j.state !== NEW) return false;
    j.state = ACTIVE;
    if (j.hasBody) j.body = "idle";
    // A cooperative block reads its signal at once; produce and actor listen to theirs.
    if (j.coop || j.kind === "produce" || j.kind === "actor") j.signalRead = true;
    // A block that returns or throws without awaiting ends inside start().
    const instant = j.instant;
    if (instant !== undefined) {
      if (instant.err !== undefined) this.failBody(j, instant.err);
      else this.completeBody(j, instant.value);
    }
    return true;
  }

  attach(child: MJob, parent: MJob) {
    child.origParent = parent;
    if (parent.state >= CANCELLING) {
      this.cancelWith(
        child,
        parent.state === COMPLETED
          ? new Sym("CE", "scope already completed")
          : this.childCancel(parent),
        false,
      );
      return;
    }
    child.parent = parent;
    parent.children.push(child);
  }

  cancel(j: MJob, cause: Sym | undefined) {
    if (j.state >= CANCELLING) return;
    const ce = this.toCancellation(cause);
    // A producer's own cancel (Kotlin's ChannelCoroutine.cancelInternal): its channel is
    // cancelled first, with the very CancellationError the job gets: what was sent is dropped.
    if (j.kind === "produce" && !j.closeSet) {
      this.closeProduced(j, ce);
      j.sent = [];
    }
    this.cancelWith(j, ce, false);
  }

  /**
   * Each job that starts cancelling here is walked at once, and only then is its parent looked
   * at, which a failure cancels unless it is a supervisor: innermost first, as Kotlin's
   * notifyCancelling cancels a job's own children before it tells its parent (cancelParent), so
   * a parent is still active while its failing child's subtree is cancelled, and what that walk
   * does to it comes first. None of them finishes before all are cancelling: the first one on
   * the path (walked, or already cancelling) is held (`held`), which holds its parents (it is in
   * their subtrees); then each that can finish does, innermost first. README "Structured
   * concurrency". Before, the model made every job on the path cancelling first and then walked
   * them (before that, outermost first), as kcoro did.
   */
  cancelWith(j: MJob, cause: Sym, failure: boolean) {
    let held: MJob | null = null;
    for (let k = j;;) {
      if (k.state >= CANCELLED) break;
      let walk = false;
      if (k.state === CANCELLING) {
        if (!failure) break;
        if (k.failed) {
          if (cause !== k.cause) this.suppress(k, cause);
          break;
        }
        k.cause = cause;
        k.failed = true;
      } else {
        const wasNew = k.state === NEW;
        k.state = CANCELLING;
        k.cancelStep = this.step;
        k.cause = cause;
        k.failed = failure;
        if (wasNew || k.cancelCompletes) k.bodyDone = true;
        walk = true;
      }
      const p = k.parent;
      const up = failure && p !== null && !p.supervisor;
      if (failure) k.handled = up && p!.handles;
      if (up && held === null) { // the first on the path, walked here or already cancelling
        held = k;
        k.held = true;
      }
      if (walk) this.cancelDown(k);
      if (!up) break;
      k = p!;
    }
    if (held !== null) {
      held.held = false;
      this.tryFinalize(held);
    }
  }

  suppress(j: MJob, later: Sym) {
    // Kept in the first failure's `suppressed` list, or reported when that is no object.
    const first = j.cause!;
    if (first.bound && (typeof first.real !== "object" || first.real === null)) {
      this.report(j.ceh, later);
      return;
    }
    const list = suppressed.get(first) ?? suppressed.set(first, []).get(first)!;
    if (!list.includes(later)) list.push(later);
  }

  cancelDown(j: MJob) {
    const ce = this.childCancel(j);
    if (j.signalRead && j.abortReason === undefined) j.abortReason = ce;
    this.onAbort(j);
    for (const c of [...j.children]) { // oldest first, each subtree before the next (Kotlin's)
      if (c.state >= CANCELLING) continue;
      const wasNew = c.state === NEW;
      c.state = CANCELLING;
      c.cancelStep = this.step;
      c.cause = ce;
      c.failed = false;
      if (wasNew || c.cancelCompletes) c.bodyDone = true;
      this.cancelDown(c);
    }
    this.tryFinalize(j);
  }

  /**
   * What a job's signal aborting does at once: nested scopes following it cancel, an actor's
   * mailbox is cancelled, a cancelled producer's channel closes with the reason (a failed one's
   * closes with the failure as the job is final, `finalize`, as Kotlin's `onCancelled` does).
   */
  onAbort(j: MJob) {
    if (!j.signalRead) return;
    const reason = j.abortReason!;
    for (const f of [...j.followers]) this.cancel(f, reason);
    if (j.kind === "actor" && !j.final) this.actorCancelMailbox(j, reason);
    if (j.kind === "produce" && !j.closeSet && !j.failed) this.closeProduced(j, reason);
    this.dirty = true;
  }

  /**
   * A producer's channel closes with `cause`: at once at a cancellation (`onAbort`), while the job
   * is cancelling, children of it maybe still running; as it is final otherwise, a failure's
   * (`finalize`). Its moment is what the steps' checks see: closed, or not, against the job's
   * state after each step.
   */
  closeProduced(j: MJob, cause: Sym | undefined) {
    j.closeSet = true;
    j.closeCause = cause;
    const kids = j.children.filter((c) => !c.final).length;
    j.closedWhile = `${STATES[j.state]}${kids > 0 ? ", children running" : ""}`;
    count(`produce closed while ${j.closedWhile}${j.failed ? " (failed)" : ""}`);
  }

  actorCancelMailbox(j: MJob, reason: Sym | undefined) {
    for (const v of j.sent) this.events.push({ kind: "undelivered", job: j.id, value: v });
    j.sent = [];
    // A mailbox closed before keeps its close (no cause): a channel's first close wins
    if (!j.closed) j.mailboxCause = reason;
    const mb = j as MJob & { mailboxCancelled?: boolean; mailboxClosedFirst?: boolean };
    // Closed before (not cancelled): its operations keep answering as closed, as Kotlin's.
    if (j.closed && !mb.mailboxCancelled) mb.mailboxClosedFirst = true;
    j.closed = true;
    mb.mailboxCancelled = true;
  }

  completeBody(j: MJob, value: unknown) {
    if (j.bodyDone) return;
    j.bodyDone = true;
    if (j.hasBody) j.body = "done";
    if (j.state === ACTIVE) {
      j.value = value;
      j.state = COMPLETING;
    }
    this.tryFinalize(j);
  }

  failBody(j: MJob, err: Sym) {
    if (j.bodyDone) return;
    j.bodyDone = true;
    if (j.hasBody) j.body = "done";
    if (j.state === NEW) j.state = ACTIVE;
    this.cancelWith(j, err, !err.isCancellation);
    this.tryFinalize(j);
  }

  tryFinalize(j: MJob) {
    if (!j.bodyDone || j.children.length > 0 || j.held || j.leaving > 0) return;
    if (j.state === COMPLETING) this.finalize(j, COMPLETED);
    else if (j.state === CANCELLING) this.finalize(j, CANCELLED);
  }

  finalize(j: MJob, state: number) {
    // A failure no parent took is reported first, the job still cancelling and among its
    // parent's children (Kotlin's handleJobException, before the job is final; job.ts `#report`).
    // A producer's goes to its receivers where its channel is still open (closed with it below),
    // as Kotlin's ProducerCoroutine.onCancelled reports only what its close did not take.
    const delivered = j.kind === "produce" && !j.closeSet;
    if (state === CANCELLED && j.failed && !j.handled && j.reports && !delivered) {
      this.report(j.ceh, j.cause!);
    }
    j.state = state;
    const cause = j.finalCause();
    // Unlinked from its parent next, before any handler runs (Kotlin's completeStateFinalization);
    // a parent already waiting for it (body done) finishes only after its handlers have run.
    const p = j.parent;
    const waiting = p !== null && p.bodyDone;
    if (p !== null) {
      p.children = p.children.filter((c) => c !== j);
      j.parent = null;
      if (waiting) p.leaving++;
    }
    // onFinal: a root's timer is cleared, it stops following its owner's signal, it leaves the
    // nested set of the timeout it was under, and its own nested ones leave its (each still
    // running handed a timer for the rest of its Deadline, below, unless it fired).
    j.timer = false;
    if (j.under !== null) {
      j.under.nested = j.under.nested.filter((n) => n !== j);
      j.under.leftNested.push({ n: j, step: this.step });
    }
    if (!j.fired) {
      // Each still running joins the set of the nearest withTimeout it is nested in that still
      // runs (the same Deadline; one that fired is mid-walk, and its walk reaches them), or where
      // none does, is handed a timer for the rest of this one's time (with this one's
      // TimeoutError), which it clears as it finishes.
      let heir = j.under;
      while (heir !== null && heir.final) heir = heir.under;
      if (heir !== null) {
        count(
          "timeout nested: rejoined an outer (the one it was in finished first)",
          j.nested.length,
        );
        for (const n of j.nested) {
          n.under = heir;
          heir.nested.push(n);
        }
      } else {
        count("timeout nested: handed over (the outer finished first)", j.nested.length);
        for (const n of j.nested) {
          n.timer = true;
          n.handover = j.expiresWith;
          this.handovers.push(n);
        }
        // Those that finished before it in this step, in the model's resume order: the library
        // may have finished this one first and handed them a timer (armed, then cleared as they
        // finished), the event loop's order, as for one that finishes after it (seed 2111: #70,
        // which followed #62's signal, and #62 both cancelled by one handler). Final, they make
        // the count a range (`Run.attributeHandovers`).
        const early = j.leftNested.filter((l) => l.step === this.step).map((l) => l.n);
        count("timeout nested: finished in the step its outer did, before it", early.length);
        this.handovers.push(...early);
      }
      // Each has moved on (rejoined or handed over): none is nested in this finished one now. A
      // fired one keeps its set instead (this block is skipped): the timer's walk (`expire`),
      // which cancels them after its own scope, still reaches them (time.ts's onFinal likewise
      // leaves a fired timeout's set to `expire`).
      j.nested = [];
    }

    if (j.following !== null) {
      j.following.followers = j.following.followers.filter((f) => f !== j);
      j.following = null;
    }
    if (j.rootKind !== undefined) {
      j.outcome = j.state === COMPLETED
        ? { ok: true, value: j.value }
        : j.rootKind === "withTimeoutOrNull" && cause === j.timeout
        ? { ok: true, value: null }
        : { ok: false, err: cause! };
    }
    // Selects waiting on it: the first to finish wins.
    for (const o of this.jobs) {
      const w = o.wait;
      if (o.body !== "waiting" || w?.kind !== "select") continue;
      const i = w.clauses.findIndex((c) => c.job === j);
      if (i < 0) continue;
      if (w.won === undefined) w.won = { clause: i, candidates: [i] };
      else w.won.candidates.push(i);
    }
    const handlers = j.handlers;
    j.handlers = [];
    j.internal = 0;
    // What the handlers throw is reported once, after all of them ran (Kotlin's notifyHandlers):
    // the first as the CompletionHandlerError's cause, the later ones in its `suppressed` list.
    let che: Sym | undefined;
    for (const h of handlers) {
      if (!h.live) continue;
      h.live = false;
      // A child that was in its parent's list: no longer there, and the parent not finished,
      // unless an earlier handler ended it (cancelled a free-standing scope: its body ends).
      const seen = p !== null ? seenFromHandler(false, p.final) : undefined;
      this.events.push({ kind: "handler", handler: h.id, job: j.id, err: cause, seen });
      if (h.cancels !== undefined) this.cancel(h.cancels, undefined);
      if (h.starts !== undefined) this.start(h.starts);
      if (h.throws !== undefined) {
        const thrown = new Sym("Error", "thrown", undefined, { obj: h.throws });
        if (che === undefined) che = new Sym("CHE", "handler", thrown);
        else (suppressed.get(che) ?? suppressed.set(che, []).get(che)!).push(thrown);
      }
    }
    if (che !== undefined) this.report(j.ceh, che);
    // produce: the channel is closed with the job's cause (a failure as it is: only a
    // cancellation closed it before, at its signal's abort); actor: onDone.
    if (j.kind === "produce" && !j.closeSet) this.closeProduced(j, cause);
    if (j.kind === "actor") {
      if (!(j as MJob & { mailboxCancelled?: boolean }).mailboxCancelled) {
        this.actorCancelMailbox(j, cause);
      }
      j.doneCalls.push(cause);
      this.events.push({ kind: "onDone", job: j.id, err: cause });
    }
    if (waiting) p!.leaving--;
    if (p !== null) this.tryFinalize(p);
    this.dirty = true;
  }

  /** Runs the continuations the last step made ready, until none is left. */
  settle() {
    // Selects are resolved last: every finish of this step is then among the candidates.
    for (;;) {
      while (this.dirty) {
        this.dirty = false;
        for (const j of this.jobs) this.resume(j, false);
      }
      for (const j of this.jobs) this.resume(j, true);
      if (!this.dirty) return;
    }
  }

  resume(j: MJob, selects: boolean) {
    if (!j.hasBody || j.bodyDone) return;
    const aborted = j.coop && j.state >= CANCELLING;
    if (j.body === "idle") {
      if (aborted) {
        // Its wait ended in this step, resumed before the cancel that came later in the step:
        // which the block saw first is the event loop's to say as well (the wait's result goes
        // through more promise hops than the cancel's path to its signal may), so the result may
        // be there or not, as for a wait resumed after the cancel (`racy`, below). Before, the
        // model's resume order (by job) decided it: seed 3210, a join of a job a failure
        // cancelled, whose block (cancelled by a handler of that failure's parent, which finished
        // once the failing producer's child did) never saw the join's result.
        const last = j.results.length - 1;
        if (j.resultStep === this.step && j.cancelStep === this.step && last >= 0) {
          if (!j.results[last].startsWith("?")) j.results[last] = `?${j.results[last]}`;
          count("a wait's result and its block's cancel in one step, the result first");
        }
        this.failBody(j, j.abortedWith = this.signalReason(j)!);
        this.dirty = true;
      }
      return;
    }
    if (j.body !== "waiting") return;
    const w = j.wait!;
    let res: string | undefined;
    switch (w.kind) {
      case "join":
      case "await": {
        if (w.signal && aborted) {
          res = "aborted";
          break;
        }
        if (!w.target.final) return;
        if (w.kind === "join") res = "joined";
        else {
          const c = w.target.finalCause();
          res = c === undefined ? `value ${w.target.value}` : "err";
        }
        break;
      }
      case "select": {
        if (!selects && !(w.signal && aborted)) return;
        if (w.won === undefined) {
          if (w.signal && aborted) {
            res = "aborted";
            break;
          }
          return;
        }
        res = "selected";
        break;
      }
      case "scope": {
        if (w.scope.outcome === undefined) return;
        res = "scope";
        break;
      }
      case "send":
        res = "sent"; // unlimited capacity: a send never waits (its outcome: see `command`)
        break;
      case "receive": {
        const mb = j as MJob & { mailboxCancelled?: boolean };
        if (mb.mailboxCancelled) {
          res = "aborted";
          break;
        }
        if (j.sent.length > 0) {
          const v = j.sent.shift()!;
          j.received.push(v);
          res = `received ${v}`;
          break;
        }
        if (j.closed) {
          res = "closed";
          break;
        }
        return;
      }
    }
    // the wait ended: its handlers of the library's own go
    if ((w.kind === "join" || w.kind === "await") && w.signal && !w.target.final) {
      w.target.internal--;
    }
    if (w.kind === "select" && w.armed) {
      for (const c of w.clauses) if (!c.job.final) c.job.internal--;
    }
    // A wait that could end by itself in the step that cancelled its block: which the block
    // sees first (the wait's result, then its signal; or the signal) is the event loop's to
    // say, so its result may be there or not.
    const racy = aborted && j.cancelStep === this.step && this.resolvable(j, w);
    j.wait = undefined;
    j.body = "idle";
    this.dirty = true;
    if (aborted) {
      if (racy) j.results.push(`?${this.describeResult(w, this.naturally(j, w))}`);
      this.failBody(j, j.abortedWith = this.signalReason(j)!);
      return;
    }
    j.results.push(this.describeResult(w, res));
    j.resultStep = this.step;
  }

  /** Whether wait `w` of `j` has what it waited for, regardless of `j`'s signal. */
  resolvable(j: MJob, w: Wait): boolean {
    switch (w.kind) {
      case "join":
      case "await":
        return w.target.final;
      case "select":
        return w.won !== undefined;
      case "scope":
        return w.scope.outcome !== undefined;
      case "send":
        return true;
      case "receive":
        return j.sent.length > 0 || j.closed;
    }
  }

  /** What wait `w` gave, had `j`'s signal not aborted (for `describeResult`). */
  naturally(j: MJob, w: Wait): string {
    if (w.kind === "join") return "joined";
    if (w.kind === "receive") return j.sent.length > 0 ? `received ${j.sent[0]}` : "closed";
    return "selected";
  }

  describeResult(w: Wait, res: string): string {
    switch (w.kind) {
      case "join":
        return `join ${w.target}: ${res}`;
      case "await": {
        const c = w.target.finalCause();
        return c === undefined
          ? `await ${w.target}: value ${w.target.value}`
          : `await ${w.target}: ${errKey(c)}`;
      }
      case "select": {
        // Every clause whose job finished in this step may have won: each with its outcome.
        const tails = w.won!.candidates.map((i) => {
          const cl = w.clauses[i];
          const c = cl.job.finalCause();
          return `${i}=${
            cl.await ? c === undefined ? `value ${cl.job.value}` : errKey(c) : "joined"
          }`;
        });
        return `select ${tails.join("|")}`;
      }
      case "scope": {
        const o = w.scope.outcome!;
        return `scope ${w.scope}: ${o.ok ? `value ${o.value}` : errKey(o.err)}`;
      }
      case "send":
        return w.err === undefined ? `send ${w.value}: ok` : `send ${w.value}: ${errKey(w.err)}`;
      case "receive":
        return res;
    }
  }
}

const suppressed = new Map<Sym, Sym[]>();
/** What the runs did (KCORO_SC_STATS=1 prints it). */
const stats = new Map<string, number>();
function count(key: string, n = 1) {
  if (n > 0) stats.set(key, (stats.get(key) ?? 0) + n);
}

/** The record in force for `t`: it while it runs, else the nearest it is nested in that runs. */
function inForceM(t: MJob | null): MJob | null {
  while (t !== null && t.final) t = t.under;
  return t;
}

/**
 * The record whose Deadline is in force in a context that holds `t`'s (src/context.ts
 * `sourceOf`): `t`, or where neither it nor one it is nested in runs, that of the one it replaced
 * (in turn); null where none is in force (stale).
 */
function sourceM(t: MJob | null): MJob | null {
  while (t !== null && inForceM(t) === null) t = t.replaced;
  return t;
}

/** Error symbols in results are compared later, through `errKey` (an index into `errs`). */
let errs: Sym[] = [];
function errKey(s: Sym): string {
  let i = errs.indexOf(s);
  if (i < 0) i = errs.push(s) - 1;
  return `err@${i}`;
}

// ---------------------------------------------------------------------------------------------
// The controlled clock: setTimeout(fn, FAKE_MS) is the test's to fire.

const FAKE_MS = 987_654;
/**
 * A nested timeout's timer for the rest of the time of the withTimeout it was under, armed as
 * that one finishes first: less than FAKE_MS, by the time gone since (far less than this).
 */
const HANDOVER_SPAN = 600_000;
/**
 * A shorter timeout: given a context under a running FAKE_MS one (whose Deadline is later, as the
 * seed's run is far shorter than FAKE_MS - SHORT_MS), its own time comes first, so it replaces
 * that Deadline in its scope's context (`MJob.replaced`) and arms its own timer; a SHORT_MS one
 * under it is nested in it. Its hand-over timers are less than it, by less than SHORT_SPAN.
 */
const SHORT_MS = 123_456;
const SHORT_SPAN = 100_000;
const fakeTimers = new Map<number, () => void>();
/** The hand-over timers armed (ids, in the order armed), cleared or not: `Run.attributeHandovers`. */
const handoverIds: number[] = [];
let fakeNext = -1;
const realSetTimeout = globalThis.setTimeout;
const realClearTimeout = globalThis.clearTimeout;

function installClock(): () => void {
  // deno-lint-ignore no-explicit-any
  const g = globalThis as any;
  g.setTimeout = (fn: () => void, ms?: number, ...args: unknown[]) => {
    const handover = typeof ms === "number" &&
      ((ms < FAKE_MS && ms > FAKE_MS - HANDOVER_SPAN) ||
        (ms < SHORT_MS && ms > SHORT_MS - SHORT_SPAN));
    if (ms === FAKE_MS || ms === SHORT_MS || handover) {
      const id = fakeNext--;
      fakeTimers.set(id, fn);
      if (handover) handoverIds.push(id);
      return id;
    }
    return (realSetTimeout as unknown as (...a: unknown[]) => number)(fn, ms, ...args);
  };
  g.clearTimeout = (id?: number) => {
    if (id !== undefined && fakeTimers.has(id)) fakeTimers.delete(id);
    else realClearTimeout(id);
  };
  return () => {
    g.setTimeout = realSetTimeout;
    g.clearTimeout = realClearTimeout;
  };
}

// ---------------------------------------------------------------------------------------------
// The real side.

type Cmd = (scope: CoroutineScope) =>
  | { kind: "return"; value: unknown }
  | { kind: "throw"; err: unknown }
  | { kind: "wait"; p: Promise<unknown>; what: (v: unknown) => string; errWhat: string };

interface RNode {
  job?: Job;
  scope?: CoroutineScope;
  body: "none" | "idle" | "waiting" | "done";
  gate?: { resolve: (c: Cmd) => void };
  results: { text: string; err?: unknown }[];
  abortedWith?: unknown;
  deadline?: boolean;
  outcome?: { ok: true; value: unknown } | { ok: false; err: unknown };
  kill: Promise<never>;
  killNow: (e: unknown) => void;
  channel?: Channel<number>;
  actor?: { send(m: number): Promise<void>; trySend(m: number): unknown; close(): boolean };
  sjoins: { done: boolean; ok?: boolean }[];
  handlers: Map<number, Disposable>;
}

function newRNode(): RNode {
  let killNow!: (e: unknown) => void;
  const kill = new Promise<never>((_, reject) => killNow = reject);
  kill.catch(() => {});
  return { body: "none", results: [], kill, killNow, sjoins: [], handlers: new Map() };
}

type SendWant = { ok: true } | { ok: false; err: Sym };
interface SendCheck {
  actor: MJob;
  value: number;
  want: SendWant;
  got?: { ok: true } | { ok: false; e: unknown };
}

interface RealEvent {
  kind: "handler" | "report" | "onDone" | "undelivered";
  handler?: number;
  job?: number;
  tag?: string;
  err?: unknown;
  value?: number;
  seen?: string; // handler of a child: `seenFromHandler` of its parent (Event.seen)
}

// ---------------------------------------------------------------------------------------------
// One seed.

interface Knobs {
  steps: number;
  ms: number;
  /** At most this many jobs and scopes in one seed. */
  jobs: number;
  /**
   * False: no CompletableDeferred is made with a `parent` (`Run.completableChild`), so the runs
   * draw as they did before those were added (the pinned seeds, found then).
   */
  parented?: boolean;
  /**
   * False: no createScope is made with a `parent` (`Run.standaloneChild`), so the runs draw as
   * they did before those were added (the pinned seeds, found then).
   */
  scopeParented?: boolean;
  /**
   * False: a scope call follows its owner's signal only (or, at the root, one of the test's),
   * never another job's (`Run.followTarget`), so the runs draw as they did before that was
   * added (the pinned seeds, found then).
   */
  crossFollow?: boolean;
  /**
   * False: a free-standing scope made at the root follows one of the test's signals only, never
   * another job's (`followTarget`'s free-standing draw), as before that was added (the seeds
   * pinned then).
   */
  scopeCrossFollow?: boolean;
}

class Run {
  rnd: () => number;
  m = new Model();
  r: RNode[] = [];
  realEvents: RealEvent[] = [];
  jobIds = new Map<Job, number>();
  trace: string[] = [];
  nextHandler = 0;
  nextValue = 1000;
  modelHandlers = new Map<number, MHandler>();
  contexts = new Map<number, Context>();
  unhandled: unknown[] = [];
  roots = 0;
  /** The fake timers the model accounts for: a scope's own (`timers`), or handed over. */
  knownTimers = new Set<number>();
  handoverGroups: HandoverGroup[] = [];

  /** The draws of `completableChild` (apart from `rnd`, whose draws it leaves as they were). */
  rndParent: () => number;
  /** The draws of `standaloneChild` (apart from `rnd` and `rndParent`, left as they were). */
  rndScope: () => number;
  /** The draws of `followTarget` (apart from the others, left as they were). */
  rndFollow: () => number;
  /** Those of `followTarget` for a free-standing scope (so `rndFollow`'s stay as they were). */
  rndFollowScope: () => number;

  constructor(readonly seed: number, readonly knobs: Knobs) {
    this.rnd = prng(seed);
    this.rndParent = prng(seed + 0x5eed);
    this.rndScope = prng(seed + 0x5c0e);
    this.rndFollow = prng(seed + 0xf011);
    this.rndFollowScope = prng(seed + 0xf012);
  }

  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.rnd() * xs.length)];
  }
  chance(p: number): boolean {
    return this.rnd() < p;
  }

  log(s: string) {
    this.trace.push(s);
  }

  fail(why: string): never {
    const tail = this.trace.slice(-Number(Deno.env.get("KCORO_SC_TAIL") ?? 60)).join("\n  ");
    throw new Error(
      `sc model fuzz: seed ${this.seed}, step ${this.trace.length}: ${why}\n` +
        `replay: KCORO_SC_SEED=${this.seed} KCORO_SC_STEPS=${this.knobs.steps} ` +
        `KCORO_SC_JOBS=${this.knobs.jobs}\n  ${tail}`,
    );
  }

  newJob(kind: Kind, ceh: number | null, supervisor: boolean): [MJob, RNode] {
    const j = new MJob(this.m.jobs.length, kind, ceh, supervisor);
    this.m.jobs.push(j);
    const rn = newRNode();
    this.r.push(rn);
    return [j, rn];
  }

  contextFor(root: number | null): Context {
    if (root === null) return Context.empty;
    let c = this.contexts.get(root);
    if (c === undefined) {
      const throws = this.chance(0.2) ? new Error(`ceh of #${root} threw`) : undefined;
      if (throws !== undefined) this.m.cehThrows.set(root, known(throws));
      c = Context.empty.with(CoroutineExceptionHandler, (e) => {
        this.realEvents.push({ kind: "report", tag: `ceh#${root}`, err: e });
        if (throws !== undefined) throw throws;
      });
      this.contexts.set(root, c);
    }
    return c;
  }

  /** An instant block (one in ten): it returns or throws at once. */
  maybeInstant(j: MJob) {
    if (!this.chance(0.1)) return;
    if (this.chance(0.6)) j.instant = { value: this.nextValue++ };
    else {
      const e = this.chance(0.8) ? this.newError() : new CancellationError(`c${this.nextValue++}`);
      j.instant = { err: known(e, e instanceof CancellationError ? "CE" : "Error"), real: e };
    }
    j.hasBody = false; // no script: nothing to command
  }

  /** The block every task and scope runs: steps from the test, through its gate. */
  block(j: MJob) {
    const rn = this.r[j.id];
    const instant = j.instant;
    if (instant !== undefined) {
      return (scope: CoroutineScope): unknown => {
        rn.deadline = scope.context.has(Deadline);
        rn.scope = scope;
        rn.job = scope.job;
        this.jobIds.set(scope.job, j.id);
        if (instant.err !== undefined) throw instant.real;
        return instant.value;
      };
    }
    return async (scope: CoroutineScope): Promise<unknown> => {
      rn.deadline = scope.context.has(Deadline);
      rn.scope = scope;
      rn.job = scope.job;
      this.jobIds.set(scope.job, j.id);
      const signal = j.coop ? scope.signal : undefined;
      try {
        for (;;) {
          rn.body = "idle";
          const cmd = await new Promise<Cmd>((resolve, reject) => {
            const gate = {
              resolve: (c: Cmd) => {
                if (rn.gate === gate) rn.gate = undefined;
                resolve(c);
              },
            };
            rn.gate = gate;
            rn.kill.catch(reject);
            if (signal !== undefined) {
              const aborted = () => {
                if (rn.gate === undefined) return; // answered already
                reject(rn.abortedWith = signal.reason);
              };
              if (signal.aborted) aborted();
              else signal.addEventListener("abort", aborted, { once: true });
            }
          });
          rn.gate = undefined;
          const c = cmd(scope);
          if (c.kind === "return") return c.value;
          if (c.kind === "throw") throw c.err;
          rn.body = "waiting";
          let text: string, err: unknown;
          try {
            text = c.what(await Promise.race([c.p, rn.kill]));
          } catch (e) {
            text = c.errWhat;
            err = e;
          }
          if (signal?.aborted) throw rn.abortedWith = signal.reason;
          rn.results.push({ text, err });
        }
      } finally {
        rn.body = "done";
        rn.gate = undefined;
      }
    };
  }

  // --- actions -----------------------------------------------------------------------------

  scopes(): MJob[] {
    return this.m.jobs.filter((j) => this.r[j.id].scope !== undefined || j.kind === "standalone");
  }

  live(): MJob[] {
    return this.m.jobs.filter((j) => this.r[j.id].job !== undefined);
  }

  newRoot() {
    const kinds: (RootKind | "standalone")[] = [
      "coroutineScope",
      "supervisorScope",
      "withTimeout",
      "withTimeoutOrNull",
      "nonCancellable",
      "standalone",
    ];
    const kind = this.chance(0.1) ? "completable" : this.pick(kinds);
    const cehRoot = this.chance(0.7) ? this.m.jobs.length : null;
    if (kind === "completable") {
      // Half of them, where a job is there, are made a child of one (`parent`), live or final,
      // drawn from `rndParent`, so the draws above run as before: the pinned seeds' runs stay
      // as they were up to the first such deferred.
      const parents = this.live();
      if (this.knobs.parented !== false && parents.length > 0 && this.rndParent() < 0.5) {
        this.completableChild(parents[Math.floor(this.rndParent() * parents.length)], cehRoot);
        return;
      }
      const [j, rn] = this.newJob("completable", cehRoot, false);
      this.log(`#${j.id} = new CompletableDeferred(ceh: ${cehRoot !== null})`);
      j.state = ACTIVE;
      const d = new CompletableDeferred<unknown>({ context: this.contextFor(cehRoot) });
      rn.job = d;
      (rn as RNode & { completable?: CompletableDeferred<unknown> }).completable = d;
      this.jobIds.set(d, j.id);
      return;
    }
    if (kind === "standalone") {
      const sup = this.chance(0.5);
      // A third of them, where a job is there, are made a child of one (`parent`), live or final,
      // drawn from `rndScope`, so the draws above run as before, up to the first such scope.
      // Sometimes a deferred that has a parent of its own (`throughDeferred`).
      const parents = this.live();
      if (
        this.knobs.scopeParented !== false && parents.length > 0 && this.rndScope() < 0.33
      ) {
        const parent = this.throughDeferred() ??
          parents[Math.floor(this.rndScope() * parents.length)];
        this.standaloneChild(parent, cehRoot, sup);
        return;
      }
      const [j, rn] = this.newJob("standalone", cehRoot, sup);
      // One time in six another job's signal (`followTarget`): a cancel across the tree. One
      // aborted already cancels the scope as it is made.
      const leader = this.knobs.scopeCrossFollow === false
        ? null
        : this.followTarget(j, null, this.rndFollowScope);
      this.log(
        `#${j.id} = createScope({ supervisor: ${sup}, ceh: ${cehRoot !== null}${
          leader !== null ? `, signal: ${leader}'s` : ""
        } })`,
      );
      this.roots++;
      j.state = ACTIVE;
      // (The test's signal drawn first either way, so that `rnd` draws as it did.)
      let signal = this.rootSignal(j);
      if (leader !== null) {
        this.controllers.delete(j);
        signal = this.r[leader.id].scope!.signal;
        const reason = this.m.signalReason(leader);
        if (reason !== undefined) {
          count("createScope given an aborted signal");
          this.m.cancel(j, reason);
        } else {
          j.following = leader;
          leader.followers.push(j);
        }
        this.m.dirty = true;
      }
      const s = createScope({ supervisor: sup, context: this.contextFor(cehRoot), signal });
      rn.job = s;
      rn.scope = s;
      this.jobIds.set(s, j.id);
      return;
    }
    this.roots++;
    this.startScope(kind, null, cehRoot);
  }

  /**
   * A scope call: at the root (owner null) or inside `owner`'s block. At the root, `given` is
   * the job whose scope's context alone it is given (no signal): under a withTimeout still
   * running there, a timeout nests in it without being awaited by its block (src/time.ts).
   */
  startScope(
    kind: RootKind,
    owner: MJob | null,
    cehRoot: number | null,
    given: MJob | null = null,
  ): MJob {
    const sup = kind === "supervisorScope";
    const [j, rn] = this.newJob("root", cehRoot, sup);
    j.rootKind = kind;
    j.owner = owner;
    j.coop = this.chance(0.5);
    this.maybeInstant(j);
    const ownerFollowed = owner !== null && kind !== "nonCancellable" && this.chance(0.8);
    // Another job's signal instead (a sibling, a cousin in another branch, an ancestor above the
    // owner, a job of another root, one already final): its cancel ends this scope across the
    // tree, where the owner's only ever came down it.
    const followed = kind === "nonCancellable" || (owner !== null && !ownerFollowed)
      ? null
      : this.followTarget(j, owner);
    const leader = followed ?? (ownerFollowed ? owner : null);
    const follows = leader !== null;
    const ms = kind === "withTimeout" || kind === "withTimeoutOrNull"
      ? this.pick(
        given !== null
          ? [FAKE_MS, FAKE_MS, FAKE_MS, SHORT_MS, SHORT_MS, 0]
          : [FAKE_MS, FAKE_MS, SHORT_MS, 0, -1],
      )
      : 0;
    this.log(
      `#${j.id} = ${kind}${ms !== 0 ? `(${ms})` : ""} in ${owner ?? "test"}` +
        `${given !== null ? `, given the context of ${given}` : ""}` +
        ` (${j.coop ? "coop" : "stubborn"}${
          followed !== null ? `, follows ${followed}` : follows ? ", follows" : ""
        }` +
        `${j.instant ? `, instant ${j.instant.err ?? j.instant.value}` : ""})`,
    );
    // the model
    const leaderScope = leader !== null ? this.r[leader.id].scope! : undefined;
    const reason = follows ? this.m.signalReason(leader!) : undefined;
    const timed = kind === "withTimeout" || kind === "withTimeoutOrNull";
    const from = owner ?? given; // whose context it is given
    j.deadline = kind === "nonCancellable" ? false : (timed && ms > 0) || (from?.deadline ?? false);
    j.timedBy = kind === "nonCancellable" ? null : from?.timedBy ?? null;
    // A withTimeout still running around it (its Deadline, an equal time earlier, comes first):
    // nested under it, no timer of its own; one finished is stale, unless one it was nested in
    // still runs (that one's, then). Nested, it has a Deadline record of its own (that one's
    // Deadline, in force while it runs) that timeouts nest in. Where the context's own timeout
    // and those it is nested in have finished, the Deadline in force is that of the one it
    // replaced, if that still runs (`sourceM`). Its own time first (SHORT_MS under a FAKE_MS one):
    // not nested; it replaces that Deadline in its scope's context, in force there again once it
    // has finished (while that one runs).
    const source = sourceM(j.timedBy);
    const enforcing = inForceM(source);
    const first = timed && ms > 0 && enforcing !== null && ms < enforcing.len;
    const under = timed && ms > 0 && !first ? enforcing : null;
    if (reason !== undefined) {
      j.refused = true;
      j.outcome = { ok: false, err: reason };
    } else if (timed && ms <= 0) {
      j.refused = true;
      j.outcome = kind === "withTimeout"
        ? { ok: false, err: new Sym("Timeout", `${ms}`) }
        : { ok: true, value: null };
    } else if (under?.fired) {
      // Its timer fired (its block went on): at once, with its TimeoutError, rethrown by OrNull.
      count("timeout nested: failed at once (the outer's timer fired)");
      j.refused = true;
      j.outcome = { ok: false, err: under.expiresWith! };
    } else {
      if (timed && source !== j.timedBy) {
        count("timeout given a context whose timeout finished: in force through the one replaced");
      }
      if (first) count("timeout own time first (replaced a later Deadline)");
      if (under !== null) {
        count("timeout nested: registered");
        j.under = under;
        under.nested.push(j);
        j.expiresWith = under.expiresWith;
        j.len = under.len;
        j.replaced = under.replaced;
        j.timedBy = j;
      } else if (timed) {
        j.timer = true;
        j.timeout = new Sym("Timeout", `${ms}`);
        j.expiresWith = j.timeout;
        j.len = ms;
        j.replaced = first ? source : null;
        j.timedBy = j;
      }
      if (follows) {
        j.following = leader;
        leader!.followers.push(j);
      }
      this.m.start(j);
    }
    // the real one
    const rootSignal = owner === null && !follows && kind !== "nonCancellable" && !j.refused
      ? this.rootSignal(j)
      : undefined;
    const options = {
      context: from !== null ? this.r[from.id].scope!.context : this.contextFor(cehRoot),
      ...(follows ? { signal: leaderScope!.signal } : {}),
      ...(rootSignal !== undefined ? { signal: rootSignal } : {}),
    };
    const block = this.block(j);
    const before = new Set(fakeTimers.keys());
    let p: Promise<unknown>;
    switch (kind) {
      case "coroutineScope":
        p = coroutineScope(block, options);
        break;
      case "supervisorScope":
        p = supervisorScope(block, options);
        break;
      case "withTimeout":
        p = withTimeout(ms, block, options);
        break;
      case "withTimeoutOrNull":
        p = withTimeoutOrNull(ms, block, options);
        break;
      case "nonCancellable":
        p = nonCancellable(block, { context: options.context });
        break;
    }
    const added = [...fakeTimers.keys()].filter((k) => !before.has(k));
    (rn as RNode & { timers?: number[] }).timers = added;
    for (const k of added) this.knownTimers.add(k);
    if (!j.refused && rn.scope === undefined) this.fail(`${j}'s block did not start at once`);
    p.then((value) => rn.outcome = { ok: true, value }, (err) => rn.outcome = { ok: false, err });
    this.lastPromise = p;
    return j;
  }

  /**
   * One time in three (at the root, one in six), where there is one, a job other than `owner`
   * whose signal the scope call `j` follows instead of its owner's (or the test's; at the root
   * also a free-standing scope's, `createScope({ signal })`): any job with
   * a scope of its own (a task's, a nested scope's, a free-standing one), live or final, drawn
   * from `rndFollow`; else null. Before, a scope only ever followed its owner, so a cancel
   * reached a scope call only down the tree it runs in.
   */
  followTarget(j: MJob, owner: MJob | null, rnd = this.rndFollow): MJob | null {
    if (this.knobs.crossFollow === false) return null;
    if (rnd() >= (owner === null ? 1 / 6 : 1 / 3)) return null;
    const xs = this.m.jobs.filter((x) =>
      x !== j && x !== owner && this.r[x.id]?.scope !== undefined
    );
    if (xs.length === 0) return null;
    // Four times in five one not final where there is one (most jobs are final by then).
    const open = xs.filter((x) => !x.final);
    const from = open.length > 0 && rnd() < 0.8 ? open : xs;
    const x = from[Math.floor(rnd() * from.length)];
    count(`scope follows another job's signal${owner === null ? " (at the root)" : ""}`);
    if (x.final) count("scope follows another job's signal: a final one");
    else if (x.state >= CANCELLING) count("scope follows another job's signal: a cancelling one");
    return x;
  }

  /**
   * A CompletableDeferred made a child of `parent` (`{ parent }`, Kotlin's
   * `CompletableDeferred(parent)`): attached as a launch is, so the parent's cancel cancels it,
   * its failure fails the parent (unless a supervisor), and the parent waits for it. Its context
   * is the parent's (its handler gets what the deferred's completion handlers throw), or, one
   * time in four, a context with a handler of its own (`ceh`, this root's) added to it.
   */
  completableChild(parent: MJob, cehRoot: number | null) {
    const own = cehRoot !== null && this.rndParent() < 0.25;
    const ceh = own ? cehRoot : parent.ceh;
    const [j, rn] = this.newJob("completable", ceh, false);
    // Its context is the parent's, Deadline included: a scope made its child (`standaloneChild`)
    // inherits that (read nowhere before, so left unset).
    j.deadline = parent.deadline;
    j.timedBy = parent.timedBy;
    this.log(`#${j.id} = new CompletableDeferred(parent: ${parent}${own ? ", ceh" : ""})`);
    count("completable with a parent");
    if (parent.state >= CANCELLING) count("completable with a parent: cancelling or final");
    // the model: attached, started (a parent cancelling or final has cancelled it), then a lazy
    // parent started (Kotlin's initParentJob)
    this.m.attach(j, parent);
    this.m.start(j);
    if (this.m.start(parent)) count("completable with a parent: the parent started");
    this.m.dirty = true;
    // the real one
    const job = this.r[parent.id].job!;
    const d = new CompletableDeferred<unknown>(
      own ? { parent: job, context: this.contextFor(cehRoot) } : { parent: job },
    );
    rn.job = d;
    (rn as RNode & { completable?: CompletableDeferred<unknown> }).completable = d;
    this.jobIds.set(d, j.id);
  }

  /**
   * One time in three, where there is one, an active CompletableDeferred made with a parent, as
   * the parent of a free-standing scope (`standaloneChild`), else undefined: a failure in the
   * scope goes on up through the deferred, which takes none itself, to its parent, which may
   * (src/job.ts `parentTakesFailure` walks up). Drawn among all jobs, as it was at first, that
   * shape came once in 400 seeds, and the model and kcoro agreed on reporting the failure twice.
   */
  throughDeferred(): MJob | undefined {
    const through = this.m.jobs.filter((j) =>
      j.kind === "completable" && j.parent !== null && j.state === ACTIVE &&
      this.r[j.id].job !== undefined
    );
    if (through.length === 0 || this.rndScope() >= 1 / 3) return undefined;
    return through[Math.floor(this.rndScope() * through.length)];
  }

  /**
   * A free-standing scope made a child of `parent` (`createScope({ parent })`, Kotlin's
   * `CoroutineScope(Job(parent))`): attached as a launch is, so the parent's cancel cancels it,
   * its failure fails the parent (unless a supervisor), and the parent waits for it (until a
   * `join()` or dispose, drawn by the "standalone" action, or the cleanup's join). It takes its
   * children's failures where its parent takes its own (`parentTakes`). Its context is the
   * parent's (handler and Deadline), or, one time in four, with a handler of its own added; one
   * time in four it also follows a signal of its own (the "abort" action).
   */
  standaloneChild(parent: MJob, cehRoot: number | null, sup: boolean) {
    const own = cehRoot !== null && this.rndScope() < 0.25;
    const ceh = own ? cehRoot : parent.ceh;
    const [j, rn] = this.newJob("standalone", ceh, sup);
    j.parentTakes = parent.takesFailure;
    j.deadline = parent.deadline;
    j.timedBy = parent.timedBy;
    let signal: AbortSignal | undefined;
    if (this.rndScope() < 0.25) {
      const c = new AbortController();
      this.controllers.set(j, c);
      signal = c.signal;
    }
    this.log(
      `#${j.id} = createScope({ parent: ${parent}, supervisor: ${sup}${own ? ", ceh" : ""}${
        signal !== undefined ? ", signal" : ""
      } })`,
    );
    count("createScope with a parent");
    if (parent.state >= CANCELLING) count("createScope with a parent: cancelling or final");
    if (j.parentTakes) count("createScope with a parent: takes its children's failures");
    if (j.parentTakes && !parent.handles) {
      count("createScope with a parent: takes its children's failures, through a deferred");
    }
    // the model: attached, started (a parent cancelling or final has cancelled it), then a lazy
    // parent started (Kotlin's initParentJob)
    this.m.attach(j, parent);
    this.m.start(j);
    if (this.m.start(parent)) count("createScope with a parent: the parent started");
    this.m.dirty = true;
    // the real one
    const s = createScope({
      parent: this.r[parent.id].job!,
      supervisor: sup,
      ...(own ? { context: this.contextFor(cehRoot) } : {}),
      ...(signal !== undefined ? { signal } : {}),
    });
    rn.job = s;
    rn.scope = s;
    this.jobIds.set(s, j.id);
  }

  launchChild(parent: MJob) {
    const kind: Kind = this.pick(["launch", "launch", "async", "async", "produce", "actor"]);
    const lazy = (kind === "launch" || kind === "async") && this.chance(0.3);
    // One launch or async in five is given a context: the empty one, or one with a handler of
    // its own. Either is added to the parent's (Kotlin's launch(context)): the child keeps the
    // parent's handler unless given one, and always the parent's Deadline.
    const given = (kind === "launch" || kind === "async") && this.chance(0.2)
      ? (this.chance(0.5) ? "empty" : "ceh")
      : undefined;
    const ceh = given === "ceh" ? this.m.jobs.length : parent.ceh;
    const [j, rn] = this.newJob(kind, ceh, false);
    // Made before the model runs the block: whether its handler throws is drawn here.
    const context = given === undefined
      ? undefined
      : given === "ceh"
      ? this.contextFor(ceh)
      : Context.empty;
    j.coop = kind === "actor" ? true : this.chance(0.5);
    if (kind === "launch" || kind === "async") this.maybeInstant(j);
    this.log(
      `#${j.id} = ${parent}.${kind}(${lazy ? "lazy, " : ""}${j.coop ? "coop" : "stubborn"}` +
        `${given !== undefined ? `, context: ${given}` : ""}` +
        `${j.instant ? `, instant ${j.instant.err ?? j.instant.value}` : ""})`,
    );
    // the model
    j.deadline = parent.deadline;
    j.timedBy = parent.timedBy;
    this.m.attach(j, parent);
    if (!lazy) this.m.start(j);
    // the real one
    const scope = this.r[parent.id].scope!;
    const block = this.block(j);
    let job: Job;
    const options = context === undefined ? { lazy } : { lazy, context };
    if (kind === "launch") job = scope.launch(block, options);
    else if (kind === "async") job = scope.async(block, options);
    else if (kind === "produce") {
      const ch = produce<number>(scope, (out, task) => {
        rn.channel = out;
        return block(task);
      }, { capacity: "unlimited" });
      rn.channel ??= ch;
      job = producerJobOf(ch)!;
      (rn as RNode & { produced?: Channel<number> }).produced = ch;
    } else {
      const a = actor<number>(scope, (mailbox, task) => {
        (rn as RNode & { mailbox?: Channel<number> }).mailbox = mailbox;
        return block(task);
      }, {
        capacity: "unlimited",
        onDone: (cause) => this.realEvents.push({ kind: "onDone", job: j.id, err: cause }),
        onUndeliveredElement: (v) =>
          this.realEvents.push({ kind: "undelivered", job: j.id, value: v }),
      });
      rn.actor = a;
      job = a.job;
      if (j.state === ACTIVE && rn.body === "none") this.fail(`${j}'s block did not start at once`);
    }
    rn.job = job;
    this.jobIds.set(job, j.id);
    if (!lazy && j.state === ACTIVE && rn.body === "none") {
      this.fail(`${j}'s block did not start at once (UNDISPATCHED)`);
    }
  }

  /** A fresh failure: an Error, one in ten times a string (not an object: nothing to keep a
   * `suppressed` list on). Typed as an Error for the logs' sake. */
  newError(): Error {
    const n = this.nextValue++;
    return (this.chance(0.1) ? `s${n}` : new Error(`e${n}`)) as Error;
  }

  /** Gives the idle block of `j` its next step. */
  command(j: MJob) {
    const rn = this.r[j.id];
    const m = this.m;
    const choice = this.rnd();
    const targets = this.live();
    if (choice < 0.16) {
      const v = this.nextValue++;
      this.log(`${j} returns ${v}`);
      m.completeBody(j, v);
      rn.gate!.resolve(() => ({ kind: "return", value: v }));
      return;
    }
    if (choice < 0.26) {
      const e = this.chance(0.85) ? this.newError() : undefined;
      this.log(`${j} throws ${e === undefined ? "undefined" : lbl(e)}`);
      m.failBody(j, e === undefined ? new Sym("TypeError", "undefined thrown") : known(e));
      rn.gate!.resolve(() => ({ kind: "throw", err: e }));
      return;
    }
    const last = j.results.at(-1);
    const lastErr = last !== undefined && !last.startsWith("?") && !last.includes("|")
      ? /err@(\d+)$/.exec(last)
      : null;
    if (lastErr !== null && this.chance(0.3)) {
      // Rethrows what its last wait failed with: an await's failure, a nested scope's error
      // (an inner withTimeout's TimeoutError cancels this task, as Kotlin's does, silently).
      const e = errs[Number(lastErr[1])];
      this.log(`${j} rethrows ${e}`);
      m.failBody(j, e);
      const real = rn.results.at(-1)!.err;
      rn.gate!.resolve(() => ({ kind: "throw", err: real }));
      return;
    }
    if (choice < 0.31) {
      const e = new CancellationError(`c${this.nextValue++}`);
      this.log(`${j} throws ${lbl(e)} (a CancellationError)`);
      m.failBody(j, known(e, "CE"));
      rn.gate!.resolve(() => ({ kind: "throw", err: e }));
      return;
    }
    if (choice < 0.45 && targets.length > 0) {
      const t = this.pickJob(targets);
      const isAwait = (t.kind === "async" || t.kind === "completable") && this.chance(0.6);
      const signal = j.coop;
      this.log(`${j} ${isAwait ? "awaits" : "joins"} ${t}${signal ? " (signal)" : ""}`);
      j.body = "waiting";
      j.wait = { kind: isAwait ? "await" : "join", target: t, signal };
      // join/await start a lazy job; with a signal: an aborted one rejects (join), a final
      // deferred gives its result (await).
      if (t.kind === "standalone" && !isAwait) this.standaloneClose(t);
      m.start(t);
      if (signal && !t.final) t.internal++;
      m.dirty = true;
      const tj = this.r[t.id].job!;
      rn.gate!.resolve((scope) => ({
        kind: "wait",
        p: isAwait
          ? (tj as Deferred<unknown>).await(signal ? { signal: scope.signal } : undefined)
          : tj.join(signal ? { signal: scope.signal } : undefined),
        what: (v) => isAwait ? `await ${t}: value ${v}` : `join ${t}: joined`,
        errWhat: isAwait ? `await ${t}: err` : `join ${t}: err`,
      }));
      return;
    }
    if (choice < 0.55 && targets.length > 0) {
      const n = 1 + Math.floor(this.rnd() * 3);
      const clauses: { job: MJob; await: boolean }[] = [];
      for (let i = 0; i < n; i++) {
        const t = this.pickJob(targets);
        clauses.push({
          job: t,
          await: (t.kind === "async" || t.kind === "completable") && this.chance(0.5),
        });
      }
      const signal = j.coop;
      this.log(
        `${j} selects ${
          clauses.map((c) => `${c.await ? "onAwait" : "onJoin"}(${c.job})`).join(", ")
        }` +
          (signal ? " (signal)" : ""),
      );
      const w: Wait = { kind: "select", clauses, signal };
      // Clauses in order: a lazy job is started unless an earlier clause's job is final.
      for (let i = 0; i < clauses.length; i++) {
        const c = clauses[i].job;
        m.start(c);
        if (c.final) {
          w.won = { clause: i, candidates: [i] };
          break;
        }
      }
      if (w.won === undefined) {
        w.armed = true;
        for (const c of clauses) c.job.internal++;
      }
      j.body = "waiting";
      j.wait = w;
      m.dirty = true;
      const real = clauses.map((c) => this.r[c.job.id].job!);
      rn.gate!.resolve((scope) => ({
        kind: "wait",
        p: select<unknown>((s) => {
          clauses.forEach((c, i) => {
            if (c.await) s.onAwait(real[i] as Deferred<unknown>, (v) => ({ i, v }));
            else s.onJoin(real[i], () => ({ i }));
          });
        }, signal ? { signal: scope.signal } : undefined),
        what: (v) => {
          const { i, v: val } = v as { i: number; v?: unknown };
          return `select clause ${i}: ${clauses[i].await ? `value ${val}` : "joined"}`;
        },
        errWhat: "select: err",
      }));
      return;
    }
    if (choice < 0.7 && this.m.jobs.length < this.knobs.jobs) {
      const kind: RootKind = this.pick([
        "coroutineScope",
        "supervisorScope",
        "withTimeout",
        "withTimeoutOrNull",
        "nonCancellable",
      ]);
      // Made from the test at once (the block's step only awaits it), so that the step is
      // atomic for the model: the same scope with the block's signal and context.
      this.log(`${j} runs a nested scope`);
      const nested = this.startScope(kind, j, j.ceh);
      const p = this.lastPromise!;
      j.body = "waiting";
      j.wait = { kind: "scope", scope: nested };
      m.dirty = true;
      rn.gate!.resolve(() => ({
        kind: "wait",
        p,
        what: (v) => `scope ${nested}: value ${v}`,
        errWhat: `scope ${nested}: err`,
      }));
      return;
    }
    if (choice < 0.85 && j.kind === "produce") {
      const v = this.nextValue++;
      this.log(`${j} sends ${v}`);
      // While the task runs its sends are bound to its signal: aborted, they reject with it.
      const reason = m.signalReason(j);
      if (reason === undefined) j.sent.push(v);
      j.body = "waiting";
      j.wait = { kind: "send", value: v, err: reason };
      m.dirty = true;
      const ch = rn.channel!;
      rn.gate!.resolve(() => ({
        kind: "wait",
        p: ch.send(v),
        what: () => `send ${v}: ok`,
        errWhat: `send ${v}: err`,
      }));
      return;
    }
    if (choice < 0.95 && j.kind === "actor") {
      this.log(`${j} receives`);
      j.body = "waiting";
      j.wait = { kind: "receive" };
      m.dirty = true;
      const mb = (rn as RNode & { mailbox?: Channel<number> }).mailbox!;
      rn.gate!.resolve(() => ({
        kind: "wait",
        p: mb.receiveCatching(),
        what: (v) => {
          const r = v as { state: string; value?: number };
          return r.state === "ok" ? `received ${r.value}` : "closed";
        },
        errWhat: "aborted",
      }));
      return;
    }
    this.returns(j);
  }

  /** `j`'s block (idle) returns a value. */
  returns(j: MJob) {
    const v = this.nextValue++;
    this.log(`${j} returns ${v}`);
    this.m.completeBody(j, v);
    this.r[j.id].gate!.resolve(() => ({ kind: "return", value: v }));
  }

  lastPromise: Promise<unknown> | null = null;
  /** Actor sends waiting to be compared. */
  sendChecks: SendCheck[] = [];
  /** Roots' AbortControllers the test may abort. */
  controllers = new Map<MJob, AbortController>();

  rootSignal(j: MJob): AbortSignal | undefined {
    if (!this.chance(0.3)) return undefined;
    const c = new AbortController();
    this.controllers.set(j, c);
    return c.signal;
  }

  standaloneClose(t: MJob) {
    // Scope.join() closes the scope: its own part completes.
    this.m.completeBody(t, undefined);
  }

  /** A job, four times in five one that is not final when there is one. */
  pickJob(xs: MJob[]): MJob {
    const open = xs.filter((j) => !j.final);
    return open.length > 0 && this.chance(0.8) ? this.pick(open) : this.pick(xs);
  }

  /** Fires one of `g`'s hand-over timers: the nested timeout it cancels tells whose it was. */
  fireHandover(g: HandoverGroup) {
    const armed = g.members.filter((n) => n.timer);
    this.log(`fire a hand-over timer of ${armed.join(", ")}`);
    const id = g.ids.find((k) => fakeTimers.has(k));
    if (id === undefined) this.fail(`${armed.join(", ")}: no hand-over timer armed`);
    const fn = fakeTimers.get(id)!;
    fakeTimers.delete(id);
    fn();
    const hit = armed.filter((n) => this.r[n.id].job!.isCancelled);
    if (hit.length === 0) this.fail(`a hand-over timer of ${armed.join(", ")} cancelled none`);
    // Its cancel may cancel another of the group too, by what it sets off: seed 9944's first
    // timer, #13's, cancelled #13's child #25 (a createScope, final at once), whose completion
    // handler cancelled #22, which #27 follows. The first of them in the group's (the model's)
    // order is taken as the timer's: which timer is whose is not known (the library armed
    // them in its finishing order), only what it cancelled. The model's expiry of that one
    // must then have cancelled the others as well; were the timer another's, the model would
    // cancel another scope, or with another cause, than the library did, and the step's diff
    // fails (a false failure, never a bug let through). A timer that cancels two of its group
    // by itself fails here: a mutation of src/time.ts whose hand-over timer expires every
    // timeout handed over with it failed seed 42 ("the model's expiry of #1 did not cancel
    // #8"; session 40).
    const n = hit[0];
    count("timeout nested: cancel by its hand-over timer");
    n.timer = false;
    this.m.expire(n); // its own scope, then the ones nested in it
    this.m.dirty = true;
    const unexplained = hit.filter((x) => x.state < CANCELLING);
    if (unexplained.length > 0) {
      this.fail(
        `a hand-over timer of ${armed.join(", ")} cancelled ${hit.join(", ")}; ` +
          `the model's expiry of ${n} did not cancel ${unexplained.join(", ")}`,
      );
    }
    if (hit.length > 1) count("timeout nested: a hand-over timer's cancel cancelled another");
  }

  /**
   * Gives the hand-over timers armed since the last call to the nested timeouts the model
   * handed one (a group: one each), or says why not yet.
   */
  attributeHandovers(): string | null {
    const m = this.m;
    const fresh = handoverIds.filter((k) => !this.knownTimers.has(k));
    if (fresh.length === 0 && m.handovers.length === 0) return null;
    // One that finished in the step its outer finished in may have finished first (its
    // finalizer took it out of the outer's set: no timer) or after (a timer armed, cleared as it
    // finished): the event loop's order, which the model's resume order does not follow (seed
    // 3744: an inner cancelled by a handler of the scope whose end ended its outer finished
    // first). Not told apart afterwards: no timer of it is left either way (`diff` counts them
    // by group), so either count passes; so also for one the model finished first (seed 2111:
    // `Model.finalize` adds it to `handovers`, final).
    const required = m.handovers.filter((n) => !n.final).length;
    if (fresh.length < required || fresh.length > m.handovers.length) {
      const want = required === m.handovers.length
        ? `${required}`
        : `${required} to ${m.handovers.length}`;
      return `hand-over timers: ${fresh.length} armed, model ${want}`;
    }
    const g: HandoverGroup = { ids: fresh, members: m.handovers };
    for (const k of fresh) this.knownTimers.add(k);
    for (const n of g.members) n.handoverGroup = g;
    this.handoverGroups.push(g);
    m.handovers = [];
    return null;
  }

  action() {
    const m = this.m;
    const idle = m.jobs.filter((j) => j.body === "idle" && !j.bodyDone);
    const live = this.live();
    const openRoots =
      m.jobs.filter((j) =>
        j.owner === null && (j.rootKind !== undefined || j.kind === "standalone") && !j.final &&
        !j.refused
      ).length;
    if (openRoots === 0 || (this.chance(0.04) && openRoots < 4)) {
      this.newRoot();
      return;
    }
    const weights: [string, number][] = [
      ["launch", 25],
      ["command", 35],
      ["cancel", 6],
      ["start", 4],
      ["handler", 10],
      ["dispose", 3],
      ["fire", 4],
      ["standalone", 4],
      ["actor", 6],
      ["abort", 2],
      ["complete", 4],
      ["given", 10],
      ["finish", 8],
    ];
    let w = this.rnd() * weights.reduce((a, [, n]) => a + n, 0);
    let what = weights[0][0];
    for (const [k, n] of weights) {
      if ((w -= n) < 0) {
        what = k;
        break;
      }
    }
    if (what === "launch") {
      const parents = this.scopes();
      if (parents.length > 0 && m.jobs.length < this.knobs.jobs) {
        const parent = this.pickJob(parents);
        // One in ten a CompletableDeferred child instead (its own draws: see `rndParent`), one
        // in ten of the rest a free-standing scope made its child (`rndScope`).
        if (this.knobs.parented !== false && this.rndParent() < 0.1) {
          this.completableChild(parent, null);
        } else if (this.knobs.scopeParented !== false && this.rndScope() < 0.1) {
          this.standaloneChild(this.throughDeferred() ?? parent, null, this.rndScope() < 0.3);
        } else this.launchChild(parent);
        return;
      }
    }
    if (what === "command" && idle.length > 0) {
      this.command(this.pick(idle));
      return;
    }
    if (what === "given" && m.jobs.length < this.knobs.jobs) {
      // A scope given only the context of a task or scope (its handler, its Deadline), mostly
      // one under a withTimeout still running: a timeout nests in that one (its timer ends it
      // too; at once once it fired) though nothing awaits it there, so that one may finish
      // first and hand it a timer of its own for the rest (src/time.ts, `Timeout.nested`).
      // Half the time, where there is one, a context whose Deadline is in force through another
      // record than the scope's own running one: a nested timeout's (rejoins its outer if it
      // finishes first), one whose timeout finished (nested: the outer it rejoined; own time
      // first: the Deadline it replaced, restored).
      const scoped = m.jobs.filter((j) => this.r[j.id].scope !== undefined);
      const timed = scoped.filter((j) => inForceM(sourceM(j.timedBy)) !== null);
      const indirect = timed.filter((j) =>
        j.timedBy!.under !== null || inForceM(sourceM(j.timedBy)) !== j.timedBy
      );
      const from = indirect.length > 0 && this.chance(0.5)
        ? indirect
        : timed.length > 0 && this.chance(0.85)
        ? timed
        : scoped;
      if (from.length > 0) {
        const kind: RootKind = this.pick([
          "withTimeout",
          "withTimeout",
          "withTimeout",
          "withTimeoutOrNull",
          "withTimeoutOrNull",
          "withTimeoutOrNull",
          "coroutineScope",
          "supervisorScope",
          "nonCancellable",
        ]);
        const g = this.pick(from);
        this.roots++;
        this.startScope(kind, null, g.ceh, g);
        return;
      }
    }
    if (what === "finish" && m.jobs.length < this.knobs.jobs) {
      // Chains of nested timeouts, each finishing before the ones nested in it: the block of a
      // withTimeout that timeouts are nested in returns (each of them rejoins the nearest outer
      // still running, mostly; else is handed a timer for the rest of its time); or a timeout is
      // given the context of a running one (one nested itself, mostly), to nest in it; or where
      // none runs, one starts.
      const outers = idle.filter((j) => j.nested.length > 0 && !j.fired);
      const rejoin = outers.filter((j) => inForceM(j.under) !== null);
      const from = rejoin.length > 0 && this.chance(0.8)
        ? rejoin
        : outers.length > 0 && this.chance(0.3)
        ? outers
        : [];
      if (from.length > 0) {
        this.returns(this.pick(from));
        return;
      }
      const hosts = m.jobs.filter((j) => j.timedBy === j && !j.final && !j.fired);
      const deep = hosts.filter((j) => inForceM(j.under) !== null);
      const pool = deep.length > 0 && this.chance(0.7) ? deep : hosts;
      // Two deep below the one it starts from (a new one where none runs), in one step: a
      // chain whose middle can finish first.
      let g = pool.length > 0 ? this.pick(pool) : null;
      for (let depth = 0; depth < 2 && m.jobs.length < this.knobs.jobs; depth++) {
        const kind = this.pick<RootKind>(["withTimeout", "withTimeoutOrNull"]);
        this.roots++;
        const t = g === null
          ? this.startScope(kind, null, m.jobs.length)
          : this.startScope(kind, null, g.ceh, g);
        if (t.refused || t.final || t.timedBy !== t) break;
        g = t;
      }
      return;
    }
    if (what === "cancel" && live.length > 0) {
      const t = this.pickJob(live);
      const c = this.rnd();
      const cause = c < 0.35
        ? undefined
        : c < 0.7
        ? this.newError()
        : new CancellationError(`c${this.nextValue++}`);
      this.log(`cancel ${t}${cause === undefined ? "" : ` (${lbl(cause)})`}`);
      m.cancel(
        t,
        cause === undefined
          ? undefined
          : known(cause, cause instanceof CancellationError ? "CE" : "Error"),
      );
      m.dirty = true;
      // the produce channel's cancel is the consumer's; job.cancel is what is tested here
      this.r[t.id].job!.cancel(cause);
      return;
    }
    if (what === "start" && live.length > 0) {
      const t = this.pickJob(live);
      this.log(`start ${t}`);
      const want = m.start(t);
      m.dirty = true;
      const got = this.r[t.id].job!.start();
      if (got !== want) this.fail(`start ${t} returned ${got}, model ${want}`);
      return;
    }
    if (what === "handler" && live.length > 0) {
      const t = this.pickJob(live);
      const throws = this.chance(0.3) ? this.newError() : undefined;
      let cancels = this.chance(0.2) ? this.pickJob(live) : undefined;
      const lazy = live.filter((x) => x.state === NEW);
      let starts = lazy.length > 0 && this.chance(0.3) ? this.pick(lazy) : undefined;
      // Handlers of two jobs that finish in one step run in the event loop's order, not a rule
      // (above): one that starts a lazy job and one of another job that cancels that job or a
      // job above it answer by that order (started first: cancelling, its block running; the
      // cancel first: cancelled unstarted, the start a no-op). Such a pair is not drawn: the
      // later one loses that effect, with the draws as they were (a seed's program changes
      // from that handler on only: of the default run, seed 3 from its 109th step). Seed 6619
      // met it (PINNED below).
      if (!t.final) {
        const above = (x: MJob, c: MJob) => {
          for (let p: MJob | null = x; p !== null; p = p.origParent) if (p === c) return true;
          return false;
        };
        const others = [...this.modelHandlers.values()].filter((o) => o.live && o.job !== t);
        if (starts !== undefined && others.some((o) => o.cancels && above(starts!, o.cancels))) {
          starts = undefined;
          count("handler: a start left out (another job's handler cancels above it)");
        }
        if (cancels !== undefined && others.some((o) => o.starts && above(o.starts, cancels!))) {
          cancels = undefined;
          count("handler: a cancel left out (another job's handler starts below it)");
        }
      }
      const id = this.nextHandler++;
      this.log(
        `h${id} = invokeOnCompletion(${t})${throws ? ` throwing ${lbl(throws)}` : ""}` +
          (cancels ? `, cancelling ${cancels}` : "") + (starts ? `, starting ${starts}` : ""),
      );
      const h: MHandler = { id, job: t, throws, cancels, starts, live: true };
      this.modelHandlers.set(id, h);
      let expectThrow = false;
      if (t.final) {
        h.live = false;
        // Run at once: its parent as the step left it (checked by the diff).
        const seen = t.origParent === null ? undefined : seenFromHandler(false, t.origParent.final);
        m.events.push({ kind: "handler", handler: id, job: t.id, err: t.finalCause(), seen });
        if (cancels !== undefined) m.cancel(cancels, undefined);
        if (starts !== undefined) m.start(starts);
        m.dirty = true;
        expectThrow = throws !== undefined;
      } else t.handlers.push(h);
      let thrown: unknown = undefined;
      const cancelJob = cancels === undefined ? undefined : this.r[cancels.id].job!;
      const startJob = starts === undefined ? undefined : this.r[starts.id].job!;
      const job = this.r[t.id].job!;
      const parent = t.origParent === null ? undefined : this.r[t.origParent.id].job!;
      try {
        const d = job.invokeOnCompletion((cause) => {
          // Read first, before this handler cancels or starts a job.
          const seen = parent === undefined
            ? undefined
            : seenFromHandler(parent.children.includes(job), parent.isCompleted);
          this.realEvents.push({ kind: "handler", handler: id, job: t.id, err: cause, seen });
          cancelJob?.cancel();
          startJob?.start();
          if (throws !== undefined) throw throws;
        });
        this.r[t.id].handlers.set(id, d);
      } catch (e) {
        thrown = e;
      }
      if (expectThrow ? thrown !== throws : thrown !== undefined) {
        this.fail(`invokeOnCompletion(${t}) threw ${describeReal(thrown)}, model ${expectThrow}`);
      }
      return;
    }
    if (what === "dispose") {
      const hs = [...this.modelHandlers.values()].filter((h) => h.live);
      if (hs.length > 0) {
        const h = this.pick(hs);
        this.log(`dispose h${h.id}`);
        h.live = false;
        h.job.handlers = h.job.handlers.filter((x) => x !== h);
        this.r[h.job.id].handlers.get(h.id)![Symbol.dispose]();
        return;
      }
    }
    if (what === "fire") {
      // A hand-over timer only where it is told whose it is: it cancels the one scope of its
      // group's that is not cancelling yet.
      const timed = m.jobs.filter((j) =>
        j.timer &&
        (j.handover === undefined ||
          j.handoverGroup!.members.every((n) => !n.timer || n.state < CANCELLING))
      );
      if (timed.length > 0) {
        const t = this.pick(timed);
        if (t.handover !== undefined) {
          this.fireHandover(t.handoverGroup!);
          return;
        }
        this.log(`fire ${t}'s timer`);
        t.timer = false;
        m.expire(t);
        m.dirty = true;
        const ids = (this.r[t.id] as RNode & { timers?: number[] }).timers ?? [];
        const id = ids.find((k) => fakeTimers.has(k));
        if (id === undefined) this.fail(`${t} has no timer armed`);
        const fn = fakeTimers.get(id)!;
        fakeTimers.delete(id);
        fn();
        return;
      }
    }
    if (what === "standalone") {
      const sc = m.jobs.filter((j) => j.kind === "standalone");
      if (sc.length > 0) {
        const t = this.pick(sc);
        const dispose = this.chance(0.4);
        this.log(`${dispose ? "dispose" : "join"} ${t}`);
        const s = this.r[t.id].job as Scope;
        const rec: { done: boolean; ok?: boolean } = { done: false };
        this.r[t.id].sjoins.push(rec);
        t.sjoins++;
        if (dispose) m.cancel(t, new Sym("CE", "disposed"));
        else this.standaloneClose(t);
        m.dirty = true;
        (dispose ? s[Symbol.asyncDispose]() : s.join()).then(
          () => rec.ok = true,
          () => rec.ok = false,
        ).finally(() => rec.done = true);
        return;
      }
    }
    if (what === "abort") {
      const open = [...this.controllers].filter(([, c]) => !c.signal.aborted);
      if (open.length > 0) {
        const [t, c] = this.pick(open);
        const r = this.rnd();
        const reason = r < 0.3
          ? undefined
          : r < 0.65
          ? this.newError()
          : new CancellationError(`c${this.nextValue++}`);
        this.log(`abort ${t}'s signal${reason === undefined ? "" : ` (${lbl(reason)})`}`);
        // Until it is final the scope follows its signal: cancelled with the reason (wrapped
        // unless a CancellationError; abort() without one gives a DOMException).
        if (!t.final) {
          m.cancel(
            t,
            reason === undefined
              ? new Sym("DOMException", "AbortError")
              : known(reason, reason instanceof CancellationError ? "CE" : "Error"),
          );
        }
        m.dirty = true;
        c.abort(reason);
        return;
      }
    }
    if (what === "complete") {
      const ds = m.jobs.filter((j) => j.kind === "completable");
      if (ds.length > 0) {
        const t = this.pickJob(ds);
        const d = (this.r[t.id] as RNode & { completable?: CompletableDeferred<unknown> })
          .completable!;
        const want = !(t.state === CANCELLING || t.state === CANCELLED) && !t.bodyDone;
        if (t.parent !== null && want) count("completable with a parent: completed by hand");
        const r = this.rnd();
        let got: boolean;
        if (r < 0.5) {
          const v = this.nextValue++;
          this.log(`complete ${t} with ${v}`);
          if (want) m.completeBody(t, v);
          got = d.complete(v);
        } else {
          const e = r < 0.8
            ? this.newError()
            : r < 0.93
            ? new CancellationError(`c${this.nextValue++}`)
            : undefined;
          this.log(`completeExceptionally ${t} with ${e === undefined ? undefined : lbl(e)}`);
          if (want) {
            m.failBody(
              t,
              e === undefined
                ? new Sym("TypeError", "undefined")
                : known(e, e instanceof CancellationError ? "CE" : "Error"),
            );
          }
          got = d.completeExceptionally(e);
        }
        m.dirty = true;
        if (got !== want) this.fail(`complete ${t} returned ${got}, model ${want}`);
        return;
      }
    }
    if (what === "actor") {
      const actors = m.jobs.filter((j) => j.kind === "actor" && this.r[j.id].actor !== undefined);
      if (actors.length > 0) {
        const t = this.pick(actors);
        const a = this.r[t.id].actor!;
        if (this.chance(0.25)) {
          this.log(`close ${t}'s mailbox`);
          const mb = t as MJob & { mailboxCancelled?: boolean };
          const want = !t.final && !t.closed && !mb.mailboxCancelled;
          if (!t.final && !mb.mailboxCancelled) t.closed = true;
          m.dirty = true;
          const got = a.close();
          if (got !== want) this.fail(`close ${t} returned ${got}, model ${want}`);
          return;
        }
        const v = this.nextValue++;
        const mb = t as MJob & { mailboxCancelled?: boolean; mailboxClosedFirst?: boolean };
        // A cancel after a close keeps the close's outcome (the first cause wins, as Kotlin's).
        const cancelledFirst = mb.mailboxCancelled === true && mb.mailboxClosedFirst !== true;
        // Refused once the actor finished (the cause: its own), or its mailbox was cancelled
        // (the cause: the cancellation) or closed (none).
        const refused = t.final || mb.mailboxCancelled || t.closed;
        const cause = t.final ? t.finalCause() : mb.mailboxCancelled ? t.mailboxCause : undefined;
        m.dirty = true;
        if (this.chance(0.3)) {
          // send: a refused message goes to onUndeliveredElement; the send rejects with a
          // ClosedSendError (its cause the actor's) once the actor finished, else as the
          // mailbox's send does: the cancellation itself, or a ClosedSendError
          this.log(`send ${v} to ${t}`);
          if (refused) m.events.push({ kind: "undelivered", job: t.id, value: v });
          else t.sent.push(v);
          const want: SendWant = !refused
            ? { ok: true }
            : !t.final && cancelledFirst
            ? { ok: false, err: cause ?? new Sym("CE", "Channel was cancelled") }
            : { ok: false, err: new Sym("ClosedSend", "closed", t.final ? cause : undefined) };
          const check: SendCheck = { actor: t, value: v, want };
          this.sendChecks.push(check);
          a.send(v).then(() => check.got = { ok: true }, (e) => check.got = { ok: false, e });
          return;
        }
        this.log(`trySend ${v} to ${t}`);
        if (!refused) t.sent.push(v);
        const got = a.trySend(v) as { state: string; cause?: unknown };
        if (got.state !== (refused ? "closed" : "ok")) {
          this.fail(`trySend to ${t}: ${got.state}, model ${refused ? "closed" : "ok"}`);
        }
        if (refused) {
          // Its closed result carries what the send would reject with: before the actor is
          // final, a mailbox cancelled first its CancellationError, a closed one's (a cancel
          // after the close too: the first cause wins) ClosedSendError; once final, the actor's cause, else a
          // ClosedSendError (Kotlin's trySend: `closed(closeCause ?: ClosedSendChannelException)`).
          const want = !t.final && cancelledFirst
            ? cause ?? new Sym("CE", "Channel was cancelled")
            : cause ?? new Sym("ClosedSend", "closed");
          const w = matchErr(want, got.cause);
          if (w !== null) this.fail(`trySend to ${t}: cause: ${w}`);
        }
        return;
      }
    }
    if (idle.length > 0) this.command(this.pick(idle));
  }

  // --- comparison --------------------------------------------------------------------------

  /** First difference between the model and the real system, or null. */
  diff(final: boolean): string | null {
    const m = this.m;
    const pending = this.attributeHandovers();
    if (pending !== null) return pending;
    for (const k of fakeTimers.keys()) {
      if (!this.knownTimers.has(k)) return `a timer armed that the model does not know of`;
    }
    for (const g of this.handoverGroups) {
      const armed = g.ids.filter((k) => fakeTimers.has(k)).length;
      const want = g.members.filter((n) => n.timer).length;
      if (armed !== want) {
        return `${g.members.join(", ")}: ${armed} hand-over timers armed, model ${want}`;
      }
    }
    for (const j of m.jobs) {
      const rn = this.r[j.id];
      if (j.refused) {
        if (rn.job !== undefined) return `${j}: a job was made; the model refused it`;
      } else if (rn.job === undefined && j.kind !== "standalone") {
        if (j.state !== NEW || j.rootKind !== undefined) return `${j}: no job`;
      }
      const job = rn.job;
      if (job !== undefined) {
        if (job.state !== STATES[j.state]) {
          return `${j}: state ${job.state}, model ${STATES[j.state]}`;
        }
        const [a, c, x] = FLAGS[j.state];
        if (job.isActive !== a || job.isCompleted !== c || job.isCancelled !== x) {
          return `${j}: flags ${job.isActive}/${job.isCompleted}/${job.isCancelled} in ${job.state}`;
        }
        const kids = job.children.map((k) => this.jobIds.get(k));
        const want = j.children.map((k) => k.id); // oldest first, as attached
        if (kids.join() !== want.join()) return `${j}: children [${kids}], model [${want}]`;
        if (!j.final && final) {
          const n = handlerCountOf(job as JobSupport);
          const own = j.handlers.filter((h) => h.live).length + j.internal +
            (j.kind === "produce" || j.kind === "actor" ? 1 : 0);
          if (n !== own) return `${j}: ${n} completion handlers, model ${own}`;
        }
      }
      // The moment a producer's channel closes, against its job's state (compared above): at
      // once at a cancellation, while the job is cancelling (children of it may still run); as
      // the job is final for a return or a failure, the block's or a child's (Kotlin's
      // `ProducerCoroutine.onCancelled`). Before, only the final close cause was compared, so a
      // failure closing it at once (while the job read active or cancelling, children of it
      // still running) passed.
      const produced = (rn as RNode & { produced?: Channel<number> }).produced;
      if (
        j.kind === "produce" && produced !== undefined && produced.isClosedForSend !== j.closeSet
      ) {
        const kids = j.children.filter((c) => !c.final).length;
        return `${j}'s channel is ${j.closeSet ? "open" : "closed"} while ${STATES[j.state]}` +
          `${kids > 0 ? `, ${kids} children running` : ""}; model ${
            j.closeSet ? `closed while ${j.closedWhile}` : "open"
          }`;
      }
      if (rn.deadline !== undefined && rn.deadline !== j.deadline) {
        return `${j}: its context ${rn.deadline ? "has" : "has no"} Deadline, model ${j.deadline}`;
      }
      if (j.hasBody && !j.refused && rn.body !== j.body) {
        return `${j}: block ${rn.body}, model ${j.body}`;
      }
      const optional = j.results.at(-1)?.startsWith("?") ? 1 : 0;
      if (
        rn.results.length !== j.results.length &&
        rn.results.length !== j.results.length - optional
      ) {
        return `${j}: results [${rn.results.map((r) => r.text)}], model [${j.results}]`;
      }
      if (j.rootKind !== undefined && (rn.outcome === undefined) !== (j.outcome === undefined)) {
        return `${j}: scope ${rn.outcome ? "settled" : "pending"}, model ${
          j.outcome ? "settled" : "pending"
        }`;
      }
      if (j.kind === "standalone") {
        const done = rn.sjoins.filter((s) => s.done).length;
        const want = j.final ? j.sjoins : 0;
        if (done !== want) return `${j}: ${done} join/dispose settled, model ${want}`;
      }
      const timers = ((rn as RNode & { timers?: number[] }).timers ?? []).filter((k) =>
        fakeTimers.has(k)
      ).length;
      const own = j.timer && j.handover === undefined; // a hand-over timer: its group's
      if (timers !== (own ? 1 : 0)) return `${j}: ${timers} timers armed, model ${own}`;
    }
    if (this.realEvents.length !== m.events.length) {
      return `events: ${this.realEvents.length}, model ${m.events.length}`;
    }
    if (this.sendChecks.some((c) => c.got === undefined)) return "an actor's send is pending";
    return null;
  }

  /** The full comparison once settled: errors, values, events. */
  async compare(): Promise<void> {
    const m = this.m;
    for (const j of m.jobs) {
      const rn = this.r[j.id];
      const job = rn.job;
      if (job !== undefined && j.final) {
        let got: unknown = "none";
        job.invokeOnCompletion((c) => got = c);
        const why = matchErr(j.finalCause(), got);
        if (why !== null) this.fail(`${j}'s cause: ${why}`);
        if (j.kind === "async" || j.kind === "completable") {
          const p = (job as Deferred<unknown>).await();
          let out: { ok: boolean; v: unknown } | undefined;
          p.then((v) => out = { ok: true, v }, (v) => out = { ok: false, v });
          for (let i = 0; i < 5 && out === undefined; i++) await Promise.resolve();
          if (out === undefined) this.fail(`${j}: await() of a final deferred did not settle`);
          if (j.finalCause() === undefined) {
            if (!out.ok || out.v !== j.value) {
              this.fail(`${j}: await() ${describeReal(out.v)}, model ${j.value}`);
            }
          } else {
            if (out.ok) this.fail(`${j}: await() resolved ${out.v}, model ${j.finalCause()}`);
            const w = matchErr(j.finalCause(), out.v);
            if (w !== null) this.fail(`${j}: await(): ${w}`);
          }
        }
      }
      if (j.body === "done" && !j.checkedAbort) {
        j.checkedAbort = true;
        const w = matchErr(j.abortedWith, rn.abortedWith);
        if (w !== null) this.fail(`${j}'s block ended by its signal: ${w}`);
      }
      if (j.kind === "produce" && j.closeSet && !j.drained) {
        // Read out as it closed (at once at a cancellation, else once final: nothing can be sent
        // after either): what was sent stays receivable, then the close cause.
        j.drained = true;
        const ch = (rn as RNode & { produced?: Channel<number> }).produced!;
        const got: number[] = [];
        for (;;) {
          const r = ch.tryReceive();
          if (r.state === "ok") {
            got.push(r.value);
            continue;
          }
          if (r.state !== "closed") {
            this.fail(`${j}'s channel is ${r.state}, model closed while ${j.closedWhile}`);
          }
          const w = matchErr(j.closeCause, r.cause);
          if (w !== null) this.fail(`${j}'s channel close cause: ${w}`);
          break;
        }
        if (got.join() !== j.sent.join()) {
          this.fail(`${j}'s channel held [${got}], model [${j.sent}]`);
        }
      }
      if (j.rootKind !== undefined && j.outcome !== undefined) {
        const o = rn.outcome!;
        if (j.outcome.ok) {
          if (!o.ok || o.value !== j.outcome.value) {
            this.fail(
              `${j}: scope gave ${o.ok ? o.value : describeReal(o.err)}, model ${j.outcome.value}`,
            );
          }
        } else {
          if (o.ok) this.fail(`${j}: scope returned ${o.value}, model ${j.outcome.err}`);
          const w = matchErr(j.outcome.err, o.err);
          if (w !== null) this.fail(`${j}: scope's error: ${w}`);
        }
      }
      for (let i = 0; i < j.results.length; i++) {
        let want = j.results[i];
        const got = rn.results[i];
        if (want.startsWith("?")) {
          if (got === undefined) continue; // the block saw its signal first
          want = want.slice(1);
        }
        if (want.startsWith("select ")) {
          // One of the candidates, with its outcome.
          const cands = want.slice(7).split("|").map((t) => t.split("="));
          const gm = /^select clause (\d+): (.*)$/.exec(got.text);
          const ok = cands.some(([i, tail]) => {
            const em = /^err@(\d+)$/.exec(tail);
            if (em !== null) {
              return got.text === "select: err" && matchErrPeek(errs[Number(em[1])], got.err);
            }
            return gm !== null && gm[1] === i && gm[2] === tail;
          });
          if (!ok) this.fail(`${j} result ${i}: ${got.text}, model ${want}`);
          continue;
        }
        const mm = /err@(\d+)/.exec(want);
        if (mm !== null) {
          const text = want.replace(/: err@\d+$/, ": err");
          if (got.text !== text) this.fail(`${j} result ${i}: ${got.text}, model ${want}`);
          const w = matchErr(errs[Number(mm[1])], got.err);
          if (w !== null) this.fail(`${j} result ${i} (${want}): ${w}`);
        } else if (got.text !== want) {
          this.fail(`${j} result ${i}: ${got.text}, model ${want}`);
        }
      }
    }
    for (const c of this.sendChecks.splice(0)) {
      const what = `send ${c.value} to ${c.actor}`;
      if (c.want.ok !== c.got!.ok) {
        this.fail(`${what}: ${c.got!.ok ? "sent" : describeReal((c.got as { e: unknown }).e)}`);
      }
      if (!c.want.ok) {
        const w = matchErr(c.want.err, (c.got as { e: unknown }).e);
        if (w !== null) this.fail(`${what}: ${w}`);
      }
    }
    // a failure after the first is kept in the first's `suppressed` list
    for (const [first, list] of suppressed) {
      if (!first.bound) continue;
      const got = (first.real as { suppressed?: unknown[] }).suppressed ?? [];
      if (got.length !== list.length) {
        this.fail(`${first}.suppressed: [${got.map(describeReal)}], model [${list.join(", ")}]`);
      }
      list.forEach((e, i) => {
        const w = matchErr(e, got[i]);
        if (w !== null) this.fail(`${first}.suppressed[${i}]: ${w}`);
      });
    }
    // events: handlers, reports, onDone, undelivered, as multisets; errors matched
    const wantE = m.events.splice(0);
    const gotE = this.realEvents.splice(0);
    const key = (
      e: { kind: string; handler?: number; job?: number; tag?: string; value?: number },
    ) => `${e.kind}:${e.handler ?? ""}:${e.job ?? ""}:${e.tag ?? ""}:${e.value ?? ""}`;
    const pool = [...gotE];
    for (const e of wantE) {
      const i = pool.findIndex((g) =>
        key(g) === key(e) && (e.seen === undefined || g.seen === e.seen) &&
        matchErrPeek(e.err, g.err)
      );
      if (i < 0) {
        const seen = (x: { seen?: string }) => x.seen === undefined ? "" : ` (${x.seen})`;
        this.fail(
          `event ${key(e)} ${e.err ?? ""}${seen(e)} missing; got ${
            gotE.map((g) => `${key(g)} ${describeReal(g.err)}${seen(g)}`).join(", ")
          }`,
        );
      }
      const w = matchErr(e.err, pool[i].err);
      if (w !== null) this.fail(`event ${key(e)}: ${w}`);
      pool.splice(i, 1);
    }
    // one job's handlers run in the order they were added (Kotlin's list)
    const lastOf = new Map<number, number>();
    for (const e of gotE) {
      if (e.kind !== "handler") continue;
      const before = lastOf.get(e.job!);
      if (before !== undefined && before > e.handler!) {
        this.fail(`#${e.job}'s handler h${e.handler} ran after h${before}, added later`);
      }
      lastOf.set(e.job!, e.handler!);
    }
    // a job's completion handlers run before its parent's
    const pos = new Map<number, number>();
    gotE.forEach((e, i) => {
      if (e.kind === "handler" && !pos.has(e.job!)) pos.set(e.job!, i);
    });
    for (const [job, i] of pos) {
      for (let p = m.jobs[job].origParent; p !== null; p = p.origParent) {
        const pi = pos.get(p.id);
        if (pi !== undefined && pi < i) this.fail(`${p}'s handler ran before its child ${job}'s`);
      }
    }
  }

  async settle(): Promise<void> {
    this.m.settle();
    const deadline = performance.now() + 2_000;
    for (let round = 0;; round++) {
      for (let i = 0; i < 30; i++) await Promise.resolve();
      const why = this.diff(false);
      if (why === null) break;
      if (performance.now() > deadline) this.fail(why);
      await new Promise((r) => realSetTimeout(r, 0));
    }
    const why = this.diff(true);
    if (why !== null) this.fail(why);
    await this.compare();
  }

  async run(): Promise<number> {
    const t0 = performance.now();
    let steps = 0;
    for (; steps < this.knobs.steps && performance.now() - t0 < this.knobs.ms; steps++) {
      this.m.step++;
      this.action();
      const line = this.trace.at(-1)!.replace(/#\d+|\d+/g, "").replace(/\(.*\)/, "").trim();
      stats.set(`step ${line}`, (stats.get(`step ${line}`) ?? 0) + 1);
      await this.settle();
    }
    for (const j of this.m.jobs) {
      const k = `job ${j.rootKind ?? j.kind} ${j.refused ? "refused" : STATES[j.state]}`;
      stats.set(k, (stats.get(k) ?? 0) + 1);
      for (const r of j.results) {
        const rk = `result ${r.split(" ")[0]} ${r.includes("err@") ? "err" : "ok"}`;
        stats.set(rk, (stats.get(rk) ?? 0) + 1);
      }
    }
    await this.cleanup();
    return steps;
  }

  /** Ends every task (kills the blocks, cancels the jobs) and checks that everything settles. */
  async cleanup(): Promise<void> {
    this.log("cleanup");
    const deadline = performance.now() + 5_000;
    for (;;) {
      for (const rn of this.r) rn.killNow(new Error("cleanup"));
      for (const rn of this.r) rn.job?.cancel();
      for (const rn of this.r) rn.actor?.close();
      for (let i = 0; i < 30; i++) await Promise.resolve();
      const pending = this.m.jobs.filter((j) => {
        const rn = this.r[j.id];
        if (rn.job !== undefined && !rn.job.isCompleted) {
          if (j.kind === "standalone") void (rn.job as Scope).join();
          return true;
        }
        return j.rootKind !== undefined && rn.outcome === undefined;
      });
      if (pending.length === 0) break;
      if (performance.now() > deadline) this.fail(`cleanup: ${pending.join(", ")} never finished`);
      await new Promise((r) => realSetTimeout(r, 0));
    }
    for (const rn of this.r) {
      for (const k of (rn as RNode & { timers?: number[] }).timers ?? []) {
        if (fakeTimers.has(k)) this.fail(`a timer is still armed after its scope finished`);
      }
      for (const g of this.handoverGroups) {
        if (g.ids.some((k) => fakeTimers.has(k))) {
          this.fail(
            `a hand-over timer of ${g.members.join(", ")} is still armed after it finished`,
          );
        }
      }
      (rn as RNode & { produced?: Channel<number> }).produced?.[Symbol.dispose]();
    }
  }
}

function known(e: Error, cls: ErrCls = "Error"): Sym {
  return new Sym(cls, lbl(e), undefined, { obj: e });
}

/** What the trace calls a thrown value. */
function lbl(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** matchErr without binding (to find the event a real one stands for). */
function matchErrPeek(sym: Sym | undefined, real: unknown): boolean {
  if (sym === undefined) return real === undefined;
  if (sym.bound) return sym.real === real;
  if (!classOk(sym, real)) return false;
  return sym.cause === undefined || matchErrPeek(sym.cause, (real as { cause?: unknown }).cause);
}

// ---------------------------------------------------------------------------------------------

/**
 * Seeds the default run adds at larger settings, each where the defaults (150 steps, 60 jobs,
 * seeds 1-24) cannot tell a cancellation order kcoro had from the one it has now; cheap (each
 * runs in a few hundred ms). Found by hunting seeds at these settings with the old order put
 * back in src/job.ts (the first seed it fails at), against this generator (the draws of
 * 76c7076 moved every seed: 543 and 1599, found before them, told neither order apart after):
 * - 993 (seeds 1-2,000): a failure walked outermost first (the root's subtree before the
 *   failing job's: before 9bc62b5), with or without the hold, instead of innermost first;
 * - 3058 (none of seeds 1-2,000 fails): a failure's parents made `cancelling` before the
 *   failing job's subtree is walked (session 31) instead of each at its own turn, as Kotlin's
 *   cancelParent (its parents read active during that walk, and what the walk's code does to
 *   them comes first); it fails the outermost-first orders too.
 * - 2182 (at the defaults; none of seeds 1-2,181 fails): a parent waiting for its children
 *   (its block returned) that a child's completion handler cancels finishes at once, in that
 *   handler, instead of after the child's last handler (src/job.ts `#finalize` without its
 *   `#leaving` hold): the child's next handler sees its parent completed (`Event.seen`), at its
 *   29th step.
 * - 3744 (at the defaults; none of seeds 1-3,743 fails): a withTimeout nested in another, which
 *   a completion handler cancels in the step the outer finishes, finishes before it in the
 *   library, after it in the model's resume order: the model handed it a timer, the library
 *   none (`attributeHandovers` takes either count since; session 37; it failed at its 45th
 *   step, "hand-over timers: 0 armed, model 1"). Drawn with `parented` as the defaults are.
 * - 2328 (at the defaults; none of seeds 401-2,327 fails): a createScope whose parent is a
 *   CompletableDeferred made with a task's job takes its children's failures (src/job.ts
 *   `parentTakesFailure` walks up through the deferred, which takes none itself): with only the
 *   scope's own parent asked, a failed launch in it was reported by the launch and again by the
 *   task ("events: 2, model 0", at its 106th step; session 38). Drawn with both `parented` and
 *   `scopeParented`, as the defaults are. (A CompletableDeferred takes its children's failures
 *   since, so the walk stops at it: the seed pins the deferred's part of the rule now.)
 * - 1168 (at the defaults; none of seeds 1-1,167 fails): a createScope whose parent is a
 *   CompletableDeferred takes its children's failures, as the deferred takes them: the model,
 *   whose deferreds took none (walking on to a supervisor above), expected the launch to report
 *   the failure ("events: 3, model 4", at its 13th step; session 38).
 * - 6619 (at the defaults; none of seeds 25-6,618 fails): two handlers of jobs one timer ends
 *   in one step, #41's starting the lazy #37 and #23's cancelling #1, #37's parent: the library
 *   ran #41's first (#37 started, then cancelling, its block running), the model by job number
 *   (#37 cancelled unstarted, the start a no-op): "#1: children [37,38], model [38]" at its
 *   115th step, 1 seed in about 7,500 (session 40). Such a pair is not drawn since (`handler`).
 * - 9944 (at the defaults; none of seeds 25-9,943 fails but 6619): a hand-over timer whose
 *   cancel also cancelled another nested timeout of its group (through a child's completion
 *   handler and a follower: `fireHandover`): taken for a timer that cancelled two scopes, "a
 *   hand-over timer of #13, #27 cancelled 2 of them" at its 78th step (session 40).
 * - 3210 (at the defaults, scope calls following other jobs' signals: none of seeds 1-3,209
 *   fails): a coroutine's join of a job that a failure cancelled resolved in the model (its
 *   resume order, by job) before a handler, run as the failure's parent finished later in the
 *   step, cancelled the joining block; the library's block saw its signal first ("#21: results
 *   [], model [join #19: joined]" at its 79th step; session 41). Such a result is optional since
 *   (`Model.resume`): the event loop's order, as for a wait resumed after its block's cancel.
 *   Drawn with `crossFollow` (its #33 follows #31's signal), as the defaults are, without
 *   `scopeCrossFollow` (which came later).
 * - 2111 (at 300 steps and 120 jobs; none of seeds 1-2,110 fails): a withTimeout (#70) nested in
 *   another's Deadline (#62) and following its signal, both cancelled by one handler, finished
 *   first in the model (no hand-over timer), second in the library (#62's end handed it one,
 *   cleared as it finished): "hand-over timers: 2 armed, model 1" at its 166th step (session 41).
 *   Either count passes since (`Model.finalize`, `attributeHandovers`). Drawn as 3210 is.
 * Each runs its steps whatever the time they take (`ms` unbounded; each step's settling keeps
 * its own deadline): cut short by the time bound on a slow host, a run ends before the step
 * that tells the orders apart (993's 126th, 3058's 106th) and passes with either order.
 * Each runs without CompletableDeferreds made with a `parent` (`parented: false`), which came
 * later: their draws would make each seed's run another one (their first such deferred comes at
 * the 48th, 32nd and 2nd step), not known to tell those orders apart. None of them makes a
 * createScope with a `parent` (`scopeParented: false`, session 38) but 2328, for the same reason,
 * and none but 3210 draws scope calls that follow another job's signal (`crossFollow: false`,
 * session 41).
 */
const PINNED: readonly (Knobs & { seed: number })[] = [
  {
    seed: 993,
    steps: 300,
    jobs: 120,
    ms: Infinity,
    parented: false,
    scopeParented: false,
    crossFollow: false,
  },
  {
    seed: 3058,
    steps: 300,
    jobs: 120,
    ms: Infinity,
    parented: false,
    scopeParented: false,
    crossFollow: false,
  },
  {
    seed: 2182,
    steps: 150,
    jobs: 60,
    ms: Infinity,
    parented: false,
    scopeParented: false,
    crossFollow: false,
  },
  { seed: 3744, steps: 150, jobs: 60, ms: Infinity, scopeParented: false, crossFollow: false },
  { seed: 2328, steps: 150, jobs: 60, ms: Infinity, crossFollow: false },
  { seed: 1168, steps: 150, jobs: 60, ms: Infinity, crossFollow: false },
  { seed: 6619, steps: 150, jobs: 60, ms: Infinity, crossFollow: false },
  { seed: 9944, steps: 150, jobs: 60, ms: Infinity, crossFollow: false },
  { seed: 3210, steps: 150, jobs: 60, ms: Infinity, scopeCrossFollow: false },
  { seed: 2111, steps: 300, jobs: 120, ms: Infinity, scopeCrossFollow: false },
];

/** The runs: the seeds at `knobs`, then (in the default run only) the pinned cases. */
function runs(knobs: Knobs): { seed: number; knobs: Knobs }[] {
  const s = Deno.env.get("KCORO_SC_SEED");
  const out = [];
  if (s === undefined) {
    for (let i = 1; i <= 24; i++) out.push({ seed: i, knobs });
    const own = ["KCORO_SC_STEPS", "KCORO_SC_JOBS"].some((k) => Deno.env.get(k) !== undefined);
    if (!own) {
      for (const p of PINNED) out.push({ seed: p.seed, knobs: { ...knobs, ...p } });
    }
    return out;
  }
  const m = /^(\d+)-(\d+)$/.exec(s);
  if (m === null) return [{ seed: Number(s), knobs }];
  for (let i = Number(m[1]); i <= Number(m[2]); i++) out.push({ seed: i, knobs });
  return out;
}

Deno.test("structured concurrency: model-based fuzz (job, scope, time, select, produce, actor)", async () => {
  const knobs: Knobs = {
    steps: Number(Deno.env.get("KCORO_SC_STEPS") ?? 150),
    ms: Number(Deno.env.get("KCORO_SC_MS") ?? 2_000),
    jobs: Number(Deno.env.get("KCORO_SC_JOBS") ?? 60),
  };
  const uninstall = installClock();
  let current: Run | null = null;
  const onError = (e: ErrorEvent) => {
    e.preventDefault();
    current?.realEvents.push({ kind: "report", tag: "report", err: e.error });
  };
  const onUnhandled = (e: PromiseRejectionEvent) => {
    e.preventDefault();
    current?.unhandled.push(e.reason);
  };
  globalThis.addEventListener("error", onError);
  globalThis.addEventListener("unhandledrejection", onUnhandled);
  let total = 0;
  try {
    for (const { seed, knobs: its } of runs(knobs)) {
      errs = [];
      suppressed.clear();
      handoverIds.length = 0;
      const run = current = new Run(seed, its);
      total += await run.run();
      // unhandled rejections surface a macrotask later
      await new Promise((r) => realSetTimeout(r, 0));
      if (run.unhandled.length > 0) {
        run.fail(`unhandled rejection: ${run.unhandled.map(describeReal).join(", ")}`);
      }
      current = null;
    }
  } finally {
    globalThis.removeEventListener("error", onError);
    globalThis.removeEventListener("unhandledrejection", onUnhandled);
    uninstall();
  }
  if (Deno.env.get("KCORO_SC_SEED") !== undefined) console.log(`sc model fuzz: ${total} steps`);
  if (Deno.env.get("KCORO_SC_STATS") !== undefined) {
    console.log([...stats].sort().map(([k, v]) => `${k}: ${v}`).join("\n"));
  }
});

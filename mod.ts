/**
 * kcoro: stackful native coroutines for Deno, with channels, select and structured concurrency
 * over a Zig core. This module re-exports the public API; see README.md.
 *
 * @example
 * ```ts
 * import { NativeCoroutine } from "./mod.ts";
 * import assert from "node:assert/strict";
 * using fib = NativeCoroutine.create("fib", { arg: 10 });
 * assert.equal([...fib.values()].at(-1), 34n);
 * ```
 *
 * @module
 */
export {
  AbiMismatchError,
  CancellationError,
  ClosedReceiveError,
  ClosedSendError,
  CloseHooksError,
  CodecError,
  CompletionHandlerError,
  InvalidHandleError,
  KcoroError,
  LibraryClosedError,
  LibraryNotFoundError,
  LibraryPermissionError,
  ShutdownError,
  Status,
  statusName,
  TimeoutError,
} from "./src/errors.ts";
export {
  type Capacity,
  Channel,
  type ChannelMetrics,
  type ChannelOptions,
  type ChannelRole,
  type Overflow,
  type ReceiveCatchingResult,
  type SharedChannel,
  type TryReceiveManyResult,
  type TryReceiveResult,
  type TrySendManyResult,
  type TrySendResult,
  undeliveredLost,
  type WaitOptions,
} from "./src/channel.ts";
export {
  type Codec,
  type CodecName,
  codecs,
  releaseBytes,
  releaseUnavailable,
} from "./src/codec.ts";
export {
  type Builtin,
  type CoroutineState,
  type CoroutineStats,
  coroutineStats,
  NativeCoroutine,
  type NativeCoroutineOptions,
} from "./src/native.ts";
export {
  ABI_VERSION,
  closeLibrary,
  Library,
  library,
  openLibrary,
  type OpenOptions,
} from "./ffi/load.ts";
export { type Symbols, symbols } from "./ffi/symbols.ts";
export {
  type DrainOptions,
  type DrainResult,
  type NativeFunction,
  resolveNative,
  Runtime,
  runtime,
  type RuntimeOptions,
  type RuntimeStats,
  type ScheduledBuiltin,
  type ShutdownMode,
  type ShutdownOptions,
  type ShutdownResult,
  type WorkerStats,
} from "./src/runtime.ts";
export { Context, type ContextKey, createContextKey, Deadline } from "./src/context.ts";
export {
  CompletableDeferred,
  type CompletionHandler,
  CoroutineExceptionHandler,
  type Deferred,
  type Job,
  type JobState,
} from "./src/job.ts";
export {
  type Block,
  type CoroutineScope,
  coroutineScope,
  createScope,
  type CreateScopeOptions,
  type LaunchOptions,
  nonCancellable,
  type Scope,
  type ScopeOptions,
  supervisorScope,
} from "./src/scope.ts";
export { delay, withTimeout, withTimeoutOrNull } from "./src/time.ts";
export { select, type SelectBuilder, type SelectOptions, type SelectResult } from "./src/select.ts";
export { produce, type ProduceOptions } from "./src/produce.ts";
export { type Actor, actor, type ActorOptions } from "./src/actor.ts";
export {
  NativeScope,
  nativeScope,
  type NativeScopeOptions,
  type NativeWaitOptions,
} from "./src/native_scope.ts";

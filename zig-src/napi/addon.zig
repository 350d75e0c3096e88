//! kcoro's Node-API companion (`zig-out/lib/kcoro_napi.node`): ArrayBuffers over buffer-pool
//! chunks whose V8 backing-store deleter gives the chunk's viewed slices back to the pool.
//!
//! Why: a receiving isolate wraps each 128 KiB pool chunk (zig-src/bridge/pool.zig) in one
//! ArrayBuffer and hands out views of it. To give a chunk back the moment the receiver has
//! released every value of it (detaching the buffer with `transfer(0)`), the release must happen
//! exactly when no ArrayBuffer can reach the chunk's memory any more: a user's
//! `value.buffer.transfer()` moves the backing store into a new buffer, which may live on. Only
//! V8's BackingStore deleter knows that moment, and Deno exposes it only through Node-API's
//! `napi_create_external_arraybuffer` finaliser. It runs synchronously inside `transfer(0)` (on
//! the isolate's thread), on V8's sweeper threads or the isolate's thread after a collection, on
//! a terminated Worker's thread as it ends, and follows a backing store across transfers.
//!
//! The module, loaded once per isolate (`process.dlopen`, see ffi/napi.ts), exports:
//! - `bind(libraryPath)`: finds the libkcoro that `Deno.dlopen` already opened (never a second
//!   copy) and its `kc_pool_release`; 0 or a negative `BindError` code.
//! - `create(address, length)`: an ArrayBuffer over `[address, address + length)`, which must lie
//!   in one chunk of the bound library's pool, with its slot written to `out[0]`; or a negative
//!   `CreateError` code (table full: the caller falls back to a buffer of its own).
//! - `counts`: a Uint32Array over the process-wide slot table (65,536 counts). The isolate adds 1
//!   to `counts[slot]` for each pooled value it views through that slot's buffer; the finaliser
//!   passes that many to `kc_pool_release`.
//! - `out`: this isolate's Int32Array(1) where `create` writes the slot (cheaper than returning
//!   a `[buffer, slot]` array: no array and no two element stores through Node-API).
//! - `stats`: a Uint32Array(4) over process-wide counters (see `Stat`), for tests.
//! - `cells(address, length)`: an ArrayBuffer over cells of `kc_cells_alloc` (TypeScript's
//!   `runtime().cells`) whose deleter calls `kc_cells_release`: a transferred buffer keeps the
//!   cells, which its original's collection freed when a FinalizationRegistry did it. Needs no
//!   `bind`. One per block, no longer than it: the module is loadable by any code allowed FFI
//!   (`process.dlopen`), and a second buffer over a block released it twice.
//! - `bindCells(libraryPath)`: finds the libkcoro that `Deno.dlopen` already opened (as `bind`
//!   does) and its `kc_cells_pin`, which `cells` then asks first whether an address is a live
//!   block: the library's registry answers for its own blocks without a copy of the header (a
//!   system call); another copy's it copies out itself. 0 or a negative `BindError` code
//!   (`no_pool` aside). Optional: unbound, `cells` copies every header out (`validNoFault`).
//!
//! The napi_* functions are declared `extern` and resolve against the deno executable when the
//! module is loaded (linked with undefined symbols allowed). The finaliser never touches `env`.
const std = @import("std");
const builtin = @import("builtin");
const assert = std.debug.assert;
const cells_header = @import("cells_header.zig");

const Env = ?*anyopaque;
const Value = ?*anyopaque;
const Info = ?*anyopaque;
const Status = c_int;
const napi_ok: Status = 0;
const Finalize = *const fn (Env, ?*anyopaque, ?*anyopaque) callconv(.c) void;
const Callback = *const fn (Env, Info) callconv(.c) Value;
const CleanupHook = *const fn (?*anyopaque) callconv(.c) void;
/// `napi_typedarray_type` values.
const napi_int32_array: c_int = 5;
const napi_uint32_array: c_int = 6;

extern fn napi_create_function(Env, [*]const u8, usize, Callback, ?*anyopaque, *Value) Status;
extern fn napi_set_named_property(Env, Value, [*:0]const u8, Value) Status;
extern fn napi_get_cb_info(Env, Info, *usize, [*]Value, ?*Value, ?*?*anyopaque) Status;
extern fn napi_get_value_double(Env, Value, *f64) Status;
extern fn napi_get_value_string_utf8(Env, Value, ?[*]u8, usize, *usize) Status;
extern fn napi_create_external_arraybuffer(Env, ?*anyopaque, usize, ?Finalize, ?*anyopaque, *Value) Status;
extern fn napi_create_typedarray(Env, c_int, usize, Value, usize, *Value) Status;
extern fn napi_create_int32(Env, i32, *Value) Status;
extern fn napi_add_env_cleanup_hook(Env, CleanupHook, ?*anyopaque) Status;

/// `bind`'s error codes (its result is 0 on success).
pub const BindError = enum(i32) {
    /// The path is not a string, is empty, longer than `path_max` bytes or holds a NUL.
    bad_path = -1,
    /// No library of that path is loaded in the process (`dlopen(RTLD_NOLOAD)` found none).
    not_loaded = -2,
    /// The library lacks `kc_pool_release` or `kc_pool_info` (`bindCells`: `kc_cells_pin`).
    symbol_missing = -3,
    /// The library has no buffer pool (`kc_pool_info` failed: the region was not reserved).
    no_pool = -4,
    /// This process bound another library already (a second bind to the same one is 0).
    other_library = -5,
};

/// `create`'s error codes (it returns an ArrayBuffer on success).
pub const CreateError = enum(i32) {
    /// Every slot holds a live buffer: make the buffer another way.
    table_full = -1,
    /// `bind` has not succeeded in this process.
    not_bound = -2,
    /// The range is not integers, or does not lie within one chunk of the bound pool.
    bad_range = -3,
    /// Node-API refused to make the buffer (the slot went back).
    napi_failed = -4,
};

/// Slots in the process-wide table: at most this many chunk buffers live at once (in all
/// isolates together; a buffer moved by a transfer keeps its slot until it is garbage).
pub const slot_count = 65536;
const none: u32 = std.math.maxInt(u32);
/// Longest library path `bind` takes, in bytes.
const path_max = 4096;

/// Per slot: the pooled values an isolate viewed through the slot's buffer. Plain (non-atomic)
/// writes from the owning isolate's JavaScript; read and zeroed once by the buffer's finaliser
/// (see `onFinalize` for why that read sees every write).
var counts: [slot_count]u32 align(std.atomic.cache_line) = @splat(0);
/// Per slot on the free list: the slot below it (`none` ends the list). Atomic accesses only.
var links: [slot_count]u32 = @splat(none);
/// The free list's head: the slot in the low 32 bits (`none`: empty), a tag in the high 32 bits
/// that changes with every push and pop, so a pop whose read of `links` went stale (its slot was
/// popped and pushed again meanwhile) fails its compare-exchange instead of corrupting the list.
var head: std.atomic.Value(u64) = .init(none);
/// Slots at and above this one were never handed out (the free list starts empty).
var fresh: std.atomic.Value(u32) = .init(0);

/// Process-wide counters exported as `stats` (monotonic accesses: nothing is published through
/// them; tests read them after the event they count happened on their own thread or after a
/// join).
const Stat = enum(u32) {
    /// `kc_pool_release` calls made by finalisers that returned 0.
    released = 0,
    /// Those that returned an error (a miscount: more releases than the chunk has out).
    refused = 1,
    /// Finalisers run.
    finalised = 2,
    /// Slots handed out and not yet back.
    in_use = 3,
};
var stats: [4]u32 = @splat(0);

fn bump(s: Stat, comptime op: std.builtin.AtomicRmwOp) void {
    _ = @atomicRmw(u32, &stats[@intFromEnum(s)], op, 1, .monotonic);
}

/// The library `bind` found, published once (`binding`) and never changed or freed: the handle
/// keeps the library, and so its pool's region (never unmapped while loaded), alive for as long
/// as any chunk buffer might.
const Binding = struct {
    handle: *anyopaque,
    release: *const fn (?*const anyopaque, u32) callconv(.c) i32,
    base: usize,
    len: usize,
    chunk: usize,
};
var binding_storage: Binding = undefined;
/// Null until the first successful `bind`. Release store after `binding_storage` is filled;
/// acquire loads in `create` and `onFinalize` pair with it, so they see its fields.
var binding: ?*const Binding = null;
/// Serialises `bind` and `bindCells` (isolates may load the module at once); never taken on any
/// other path.
var bind_mutex: std.Thread.Mutex = .{};

/// kc_cells_pin of a library: 0 for a live block's cells (with `delta` 0, nothing changed).
const CellsPin = *const fn (?[*]u64, i32) callconv(.c) i32;
/// The library `bindCells` found, kept loaded by its handle (never closed: `cells` may call its
/// `kc_cells_pin` for as long as the module is loaded). Written under `bind_mutex` only.
var cells_handle: ?*anyopaque = null;
/// That library's kc_cells_pin, null until the first successful `bindCells`; never changed
/// after. Release store after `cells_handle` is set; the acquire load in `cells` pairs with it.
var cells_pin: ?CellsPin = null;

/// Takes a slot off the free list, else a never-used one; null when all are in use. Called on
/// isolate threads (several at once, one per isolate), concurrently with `push` from any thread.
fn pop() ?u32 {
    // Acquire (and on the CAS's success): pairs with `push`'s release, so the finaliser's
    // `counts[slot] = 0` happens before the isolate's own writes to the slot's count.
    var h = head.load(.acquire);
    while (@as(u32, @truncate(h)) != none) {
        const s: u32 = @truncate(h);
        // Monotonic: a stale value (the slot was popped and pushed again since `h` was read)
        // comes with a changed tag, and the CAS below fails.
        const below = @atomicLoad(u32, &links[s], .monotonic);
        const tag = (h >> 32) +% 1;
        h = head.cmpxchgWeak(h, (tag << 32) | below, .acquire, .acquire) orelse {
            bump(.in_use, .Add);
            return s;
        };
    }
    // Monotonic: a fresh slot's count is still its static 0, which nobody else wrote.
    var f = fresh.load(.monotonic);
    while (f < slot_count) {
        f = fresh.cmpxchgWeak(f, f + 1, .monotonic, .monotonic) orelse {
            bump(.in_use, .Add);
            return f;
        };
    }
    return null;
}

/// Puts slot `s` back on the free list; any thread (a finaliser).
fn push(s: u32) void {
    assert(s < slot_count);
    bump(.in_use, .Sub);
    var h = head.load(.monotonic);
    while (true) {
        // Monotonic: published by the CAS's release below.
        @atomicStore(u32, &links[s], @truncate(h), .monotonic);
        const tag = (h >> 32) +% 1;
        // Release: publishes `links[s]` and the finaliser's `counts[s] = 0` to the next `pop`
        // (its acquire).
        h = head.cmpxchgWeak(h, (tag << 32) | s, .release, .monotonic) orelse return;
    }
}

/// The chunk buffer's finaliser (V8's backing-store deleter, through Node-API): gives the
/// chunk the views counted in the slot's entry, then the slot. Runs exactly once per buffer,
/// when no ArrayBuffer reaches its memory any more: on the isolate's thread inside
/// `transfer(0)` (detach), as a terminated Worker ends, or on a V8 sweeper thread after a
/// collection. `env` is not used (it may not be valid on that thread).
///
/// Why the count read is complete: the owning isolate's plain writes to `counts[slot]` are
/// program-ordered before the detach on the same thread, or before the collection that found
/// the buffer unreachable, which hands the backing store to the sweeper through V8's own
/// synchronisation (a happens-before edge); a buffer the user moved to another isolate went
/// through a message port (also synchronised) and no view is counted through the moved buffer.
/// So a monotonic load suffices; nobody writes the entry again until the slot is popped.
fn onFinalize(env: Env, data: ?*anyopaque, hint: ?*anyopaque) callconv(.c) void {
    _ = env;
    const s: u32 = @intCast(@intFromPtr(hint) - 1); // create's hint is slot + 1 (never null)
    assert(s < slot_count);
    const n = @atomicLoad(u32, &counts[s], .monotonic);
    // Monotonic: ordered before the next owner's writes by `push`'s release.
    @atomicStore(u32, &counts[s], 0, .monotonic);
    if (n > 0) {
        // Acquire: pairs with `bind`'s release store (a buffer exists only after a bind).
        const b = @atomicLoad(?*const Binding, &binding, .acquire).?;
        const rc = b.release(data, n);
        if (rc == 0) {
            bump(.released, .Add);
        } else {
            bump(.refused, .Add);
            if (std.debug.runtime_safety) {
                std.debug.print("kcoro_napi: kc_pool_release({*}, {d}) failed: {d}\n", .{ data, n, rc });
            }
        }
    }
    bump(.finalised, .Add);
    push(s);
}

fn int(env: Env, x: i32) Value {
    var r: Value = null;
    _ = napi_create_int32(env, x, &r);
    return r;
}

/// `bind(libraryPath: string): number`.
fn bind(env: Env, info: Info) callconv(.c) Value {
    var argv: [1]Value = .{null};
    var argc: usize = 1;
    if (napi_get_cb_info(env, info, &argc, &argv, null, null) != napi_ok or argc < 1) {
        return int(env, @intFromEnum(BindError.bad_path));
    }
    return int(env, bindPath(env, argv[0]));
}

fn fail(e: BindError) i32 {
    return @intFromEnum(e);
}

/// The library already loaded at the path `arg` names (a string of at most `path_max` bytes,
/// no NUL), a reference to it taken (`dlclose` gives it back); else null, why in `why`.
fn loadedLibrary(env: Env, arg: Value, why: *BindError) ?*anyopaque {
    why.* = .bad_path;
    var len: usize = 0;
    if (napi_get_value_string_utf8(env, arg, null, 0, &len) != napi_ok) return null;
    if (len == 0 or len > path_max) return null;
    var buf: [path_max + 1]u8 = undefined;
    var got: usize = 0;
    if (napi_get_value_string_utf8(env, arg, &buf, buf.len, &got) != napi_ok or got != len) {
        return null;
    }
    if (std.mem.indexOfScalar(u8, buf[0..len], 0) != null) return null;
    buf[len] = 0;
    why.* = .not_loaded;
    // RTLD_NOLOAD: only a library the process loaded already (Deno.dlopen'd), matched by name
    // or by file identity; never a second copy, whose pool would be another region.
    return std.c.dlopen(buf[0..len :0], .{ .NOW = true, .NOLOAD = true });
}

fn bindPath(env: Env, arg: Value) i32 {
    var why: BindError = undefined;
    const handle = loadedLibrary(env, arg, &why) orelse return fail(why);
    bind_mutex.lock();
    defer bind_mutex.unlock();
    // Monotonic: written only under the mutex, which orders it for us.
    if (@atomicLoad(?*const Binding, &binding, .monotonic)) |b| {
        // One reference kept (the first bind's); this one's is dropped.
        _ = std.c.dlclose(handle);
        return if (b.handle == handle) 0 else fail(.other_library);
    }
    const release = std.c.dlsym(handle, "kc_pool_release");
    const pool_info = std.c.dlsym(handle, "kc_pool_info");
    if (release == null or pool_info == null) {
        _ = std.c.dlclose(handle);
        return fail(.symbol_missing);
    }
    const info_fn: *const fn (*[4]u64) callconv(.c) i32 = @ptrCast(@alignCast(pool_info.?));
    var out: [4]u64 = @splat(0);
    if (info_fn(&out) != 0 or out[2] == 0) {
        _ = std.c.dlclose(handle);
        return fail(.no_pool);
    }
    binding_storage = .{
        .handle = handle,
        .release = @ptrCast(@alignCast(release.?)),
        .base = @intCast(out[0]),
        .len = @intCast(out[1]),
        .chunk = @intCast(out[2]),
    };
    // Release: publishes binding_storage to `create` and `onFinalize` (their acquire loads).
    @atomicStore(?*const Binding, &binding, &binding_storage, .release);
    return 0;
}

/// `bindCells(libraryPath: string): number`: 0 once `cells` asks that library's kc_cells_pin
/// (a second call for the same library is 0 too), else a negative `BindError` code (`cells`
/// then copies each header out, as unbound).
fn bindCells(env: Env, info: Info) callconv(.c) Value {
    var argv: [1]Value = .{null};
    var argc: usize = 1;
    if (napi_get_cb_info(env, info, &argc, &argv, null, null) != napi_ok or argc < 1) {
        return int(env, @intFromEnum(BindError.bad_path));
    }
    return int(env, bindCellsPath(env, argv[0]));
}

fn bindCellsPath(env: Env, arg: Value) i32 {
    var why: BindError = undefined;
    const handle = loadedLibrary(env, arg, &why) orelse return fail(why);
    bind_mutex.lock();
    defer bind_mutex.unlock();
    if (cells_handle) |bound| {
        // One reference kept (the first bind's); this one's is dropped.
        _ = std.c.dlclose(handle);
        return if (bound == handle) 0 else fail(.other_library);
    }
    const pin = std.c.dlsym(handle, "kc_cells_pin") orelse {
        _ = std.c.dlclose(handle);
        return fail(.symbol_missing);
    };
    cells_handle = handle;
    // Release: publishes the library (loaded, kept by `cells_handle`) to `cells`' acquire load.
    @atomicStore(?CellsPin, &cells_pin, @ptrCast(@alignCast(pin)), .release);
    return 0;
}

/// The header of the cells at `at` if a live block of kc_cells_alloc's is there, else null,
/// never faulting. Bound (`bindCells`): the library's kc_cells_pin with a delta of 0 (nothing
/// changed) answers, looking the address up in its registry of live blocks (no copy of the
/// header, no system call: a lock and a hash look-up), and copying out only the header of a
/// block it did not allocate (another library copy's, `foreignCells`); read in place once it
/// said 0. Unbound, the header is copied out first (`validNoFault`): process_vm_readv, a
/// system call on every `cells`, though nearly every block is the bound library's own. A
/// block freed between the answer and the caller's read is the caller's use after free, as for
/// free(3).
fn liveHeader(at: usize) ?*cells_header.Header {
    // An address no block's cells can have (16-byte aligned past a 48-byte header), refused
    // before it becomes a pointer to u64s, which needs 8-byte alignment.
    if (at < @sizeOf(cells_header.Header) or at % 16 != 0) return null;
    // Acquire: pairs with `bindCellsPath`'s release store.
    const pin = @atomicLoad(?CellsPin, &cells_pin, .acquire) orelse
        return cells_header.validNoFault(at);
    const c: [*]u64 = @ptrFromInt(at);
    if (pin(c, 0) != 0) return null;
    return cells_header.of(c);
}

/// A whole number in [0, 2^53], or null.
fn address(env: Env, v: Value) ?usize {
    var d: f64 = 0;
    if (napi_get_value_double(env, v, &d) != napi_ok) return null;
    if (!(d >= 0 and d <= 9007199254740992.0) or @trunc(d) != d) return null;
    return @intFromFloat(d);
}

/// `create(address: number, length: number): ArrayBuffer | number`; the slot goes to `out[0]`
/// (the function's data: this isolate's cell).
fn create(env: Env, info: Info) callconv(.c) Value {
    var argv: [2]Value = .{ null, null };
    var argc: usize = 2;
    var data: ?*anyopaque = null;
    if (napi_get_cb_info(env, info, &argc, &argv, null, &data) != napi_ok or argc < 2) {
        return int(env, @intFromEnum(CreateError.bad_range));
    }
    // Acquire: pairs with `bind`'s release store, which published `binding_storage`.
    const b = @atomicLoad(?*const Binding, &binding, .acquire) orelse
        return int(env, @intFromEnum(CreateError.not_bound));
    const at = address(env, argv[0]) orelse return int(env, @intFromEnum(CreateError.bad_range));
    const len = address(env, argv[1]) orelse return int(env, @intFromEnum(CreateError.bad_range));
    // Inside one chunk of the pool: memory that stays mapped while the library is loaded,
    // which the binding keeps it, and whose release the finaliser can name by any address.
    if (len == 0 or at < b.base or at - b.base >= b.len or len > b.len - (at - b.base) or
        (at - b.base) / b.chunk != (at - b.base + len - 1) / b.chunk)
    {
        return int(env, @intFromEnum(CreateError.bad_range));
    }
    const s = pop() orelse return int(env, @intFromEnum(CreateError.table_full));
    var r: Value = null;
    const hint: ?*anyopaque = @ptrFromInt(@as(usize, s) + 1);
    if (napi_create_external_arraybuffer(env, @ptrFromInt(at), len, onFinalize, hint, &r) != napi_ok) {
        push(s);
        return int(env, @intFromEnum(CreateError.napi_failed));
    }
    const out: *i32 = @ptrCast(@alignCast(data.?));
    out.* = @intCast(s);
    return r;
}

/// A cells buffer's finaliser (V8's backing-store deleter): `kc_cells_release` of the library
/// copy that allocated the block (its header names it), which frees the cells unless a pin
/// (kc_cells_pin: a coroutine may still write) holds them. Runs once, when no ArrayBuffer,
/// original or transferred, views the memory: after a collection (on a V8 sweeper thread or
/// the isolate's), at the isolate's disposal (the exit, a Worker's termination), or inside a
/// `transfer` to another length (which copies). `env` is not used (it may not be valid there).
fn onCellsFinalize(env: Env, data: ?*anyopaque, hint: ?*anyopaque) callconv(.c) void {
    _ = env;
    _ = hint;
    const c: [*]u64 = @ptrCast(@alignCast(data.?));
    cells_header.of(c).release(c);
}

/// `cells(address: number, length: number): ArrayBuffer | number`: an ArrayBuffer over cells
/// `kc_cells_alloc` returned at `address` (`length` bytes, at most the block's), which
/// `kc_cells_release` gets back once no ArrayBuffer views them; or `CreateError.bad_range` (not
/// a block's address, asked without faulting: `liveHeader`; a length
/// that is no whole number of cells or longer than the block's, a block already given its one
/// ArrayBuffer, or released) or `napi_failed` (the caller then releases the block itself). Needs no
/// `bind`: the header names the release of the copy that allocated the block.
fn cells(env: Env, info: Info) callconv(.c) Value {
    var argv: [2]Value = .{ null, null };
    var argc: usize = 2;
    if (napi_get_cb_info(env, info, &argc, &argv, null, null) != napi_ok or argc < 2) {
        return int(env, @intFromEnum(CreateError.bad_range));
    }
    const at = address(env, argv[0]) orelse return int(env, @intFromEnum(CreateError.bad_range));
    const len = address(env, argv[1]) orelse return int(env, @intFromEnum(CreateError.bad_range));
    // A live block's address (16-byte aligned past a 48-byte header, as kc_cells_alloc's
    // are; ffi/napi.ts passes only theirs), asked without faulting (`liveHeader`: the bound
    // library's registry, else the header copied out first): an address whose header bytes are
    // not mapped is refused, where reading them in place (`valid`) crashed the process.
    if (len == 0 or len % 8 != 0) return int(env, @intFromEnum(CreateError.bad_range));
    const h = liveHeader(at) orelse return int(env, @intFromEnum(CreateError.bad_range));
    const c: [*]u64 = @ptrFromInt(at);
    // Within the block only: a longer view reached whatever memory came after it.
    if (len > h.bytes) return int(env, @intFromEnum(CreateError.bad_range));
    // One view per block, claimed here: a second buffer's deleter released the block twice (a
    // double free). Monotonic: a claim that publishes nothing (the block's cells are published
    // to this thread by whatever handed over the address); the RMW alone makes it once.
    const old = @atomicRmw(u64, &h.state, .Or, cells_header.viewed, .monotonic);
    if (old & (cells_header.viewed | cells_header.released) != 0) {
        return int(env, @intFromEnum(CreateError.bad_range));
    }
    var r: Value = null;
    if (napi_create_external_arraybuffer(env, c, len, onCellsFinalize, null, &r) != napi_ok) {
        return int(env, @intFromEnum(CreateError.napi_failed));
    }
    return r;
}

fn freeCell(arg: ?*anyopaque) callconv(.c) void {
    std.heap.c_allocator.destroy(@as(*i32, @ptrCast(@alignCast(arg.?))));
}

/// A typed array over static or isolate-owned memory: an external ArrayBuffer without a
/// finaliser (nothing to free when it goes; a transfer of it moves nothing that could dangle).
fn view(env: Env, kind: c_int, ptr: *anyopaque, len: usize, bytes: usize) ?Value {
    var ab: Value = null;
    if (napi_create_external_arraybuffer(env, ptr, bytes, null, null, &ab) != napi_ok) return null;
    var ta: Value = null;
    if (napi_create_typedarray(env, kind, len, ab, 0, &ta) != napi_ok) return null;
    return ta;
}

fn set(env: Env, exports: Value, name: [*:0]const u8, v: Value) bool {
    return napi_set_named_property(env, exports, name, v) == napi_ok;
}

fn def(env: Env, exports: Value, comptime name: [:0]const u8, cb: Callback, data: ?*anyopaque) bool {
    var f: Value = null;
    if (napi_create_function(env, name.ptr, name.len, cb, data, &f) != napi_ok) return false;
    return set(env, exports, name.ptr, f);
}

/// Runs once per isolate that loads the module. Returns null (the load fails with Node-API's
/// pending error, or an empty module that ffi/napi.ts refuses) when an export cannot be made.
export fn napi_register_module_v1(env: Env, exports: Value) Value {
    // This isolate's `out` cell, freed when its environment is torn down (no JavaScript of
    // it runs after that, so `create` cannot write it then).
    const cell = std.heap.c_allocator.create(i32) catch return null;
    cell.* = -1;
    if (napi_add_env_cleanup_hook(env, freeCell, cell) != napi_ok) {
        std.heap.c_allocator.destroy(cell);
        return null;
    }
    const counts_view = view(env, napi_uint32_array, &counts, slot_count, @sizeOf(@TypeOf(counts))) orelse return null;
    const out_view = view(env, napi_int32_array, cell, 1, @sizeOf(i32)) orelse return null;
    const stats_view = view(env, napi_uint32_array, &stats, stats.len, @sizeOf(@TypeOf(stats))) orelse return null;
    if (!def(env, exports, "bind", bind, null) or !def(env, exports, "create", create, cell) or
        !set(env, exports, "counts", counts_view) or !set(env, exports, "out", out_view) or
        !set(env, exports, "stats", stats_view) or !def(env, exports, "cells", cells, null) or
        !def(env, exports, "bindCells", bindCells, null))
    {
        return null;
    }
    return exports;
}

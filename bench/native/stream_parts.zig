//! Native halves for bench/stream_parts.ts: a thread that sends values through a shared
//! zero-copy channel (`kcsp_feed`: a try-send that copies and sends in one call,
//! kc_chan_try_send_copy, as a `codecs.bytes` trySend does) and one that receives them
//! (`kcsp_drain`: a try-receive), each waiting in a blocking send or receive when its try finds
//! the buffer full or empty, as the JavaScript loops await. (Retrying at once instead measured
//! the two threads' contention: a try that fails without the channel's flags saying so takes
//! both of the channel's locks, so a side polling at its partner's heels makes each of the
//! partner's operations wait for those lines.) The TypeScript side calls them as nonblocking
//! FFI functions (each runs on a thread of Deno's own) against the libkcoro it loaded:
//! `kcsp_init` looks that library up by path (RTLD_NOLOAD: the same instance, its handles and
//! buffer pool). Built by bench/stream_parts.ts into a temporary directory; not part of the
//! library.
const std = @import("std");

const Desc = extern struct { ptr: ?*anyopaque, len: usize, release: ?*anyopaque, ctx: ?*anyopaque };
const eagain: i32 = -11;
var try_recv: *const fn (u32, ?*anyopaque, u32) callconv(.c) i32 = undefined;
var recv: *const fn (u32, ?*anyopaque, u32, u64, u32, u32) callconv(.c) i32 = undefined;
var send: *const fn (u32, ?*const anyopaque, u32, u64, u32, u32) callconv(.c) i32 = undefined;
var try_send: *const fn (u32, ?*const anyopaque, u32) callconv(.c) i32 = undefined;
var try_send_copy: *const fn (?*const u32, u32, ?*const anyopaque, u32, u32, ?*Desc) callconv(.c) i32 = undefined;
var buf_free: *const fn (?*anyopaque) callconv(.c) i32 = undefined;
var pool_info: *const fn (?*[4]u64) callconv(.c) i32 = undefined;
var pool_release: *const fn (?*const anyopaque, u32) callconv(.c) i32 = undefined;

fn sym(comptime T: type, h: *anyopaque, name: [*:0]const u8) ?T {
    return @ptrCast(@alignCast(std.c.dlsym(h, name) orelse return null));
}

/// Looks up the loaded libkcoro at `path`: 0, or -1 if it is not loaded or lacks a symbol.
export fn kcsp_init(path: [*:0]const u8) callconv(.c) i32 {
    const h = std.c.dlopen(path, .{ .NOW = true, .NOLOAD = true }) orelse return -1;
    try_recv = sym(@TypeOf(try_recv), h, "kc_chan_try_recv") orelse return -1;
    recv = sym(@TypeOf(recv), h, "kc_chan_recv") orelse return -1;
    send = sym(@TypeOf(send), h, "kc_chan_send") orelse return -1;
    try_send = sym(@TypeOf(try_send), h, "kc_chan_try_send") orelse return -1;
    try_send_copy = sym(@TypeOf(try_send_copy), h, "kc_chan_try_send_copy") orelse return -1;
    buf_free = sym(@TypeOf(buf_free), h, "kc_buf_free") orelse return -1;
    pool_info = sym(@TypeOf(pool_info), h, "kc_pool_info") orelse return -1;
    pool_release = sym(@TypeOf(pool_release), h, "kc_pool_release") orelse return -1;
    return 0;
}

/// Sends `n` values of `len` bytes (0: the empty value, an inline descriptor) with tag
/// `tag` (codecs.bytes's) to channel `h`. 0, or the status of the first send that failed.
export fn kcsp_feed(h: u32, n: u32, len: u32, tag: u32) callconv(.c) i32 {
    var src: [16 * 1024]u8 = undefined;
    @memset(&src, 7);
    if (len > src.len) return -22;
    var i: u32 = 0;
    while (i < n) : (i += 1) {
        var d: Desc = .{ .ptr = null, .len = 0, .release = null, .ctx = null };
        var rc: i32 = undefined;
        if (len == 0) {
            d.ctx = @ptrFromInt(tag);
            rc = try_send(h, &d, 32);
        } else rc = try_send_copy(null, h, &src, len, tag, &d);
        // Full: the copy made is still ours; a blocking send of it.
        if (rc == eagain) rc = send(h, &d, 32, 0, 0, 0);
        if (rc != 0) {
            if (d.ptr != null) _ = buf_free(d.ptr);
            return rc;
        }
    }
    return 0;
}

/// Receives `n` values from channel `h`, freeing each value's buffer at once (`lag` 0) or,
/// as a receiving isolate's collector does, a pool chunk's buffers together `lag` chunks after
/// the chunk's last value (kc_pool_release). 0, or the status of the first receive that failed.
export fn kcsp_drain(h: u32, n: u32, lag: u32) callconv(.c) i32 {
    const max_lag = 1024;
    if (lag > max_lag) return -22;
    var info: [4]u64 = undefined;
    if (lag > 0 and pool_info(&info) != 0) return -12;
    const base = info[0];
    const size = info[1];
    const chunk = info[2];
    var held: [max_lag + 1]struct { c: u64, n: u32 } = undefined;
    var first: usize = 0;
    var count: usize = 0;
    var got: u32 = 0;
    var rc: i32 = 0;
    while (got < n) {
        var d: Desc = undefined;
        var r = try_recv(h, &d, 32);
        if (r == eagain) r = recv(h, &d, 32, 0, 0, 0); // empty: a blocking receive
        if (r != 0) {
            rc = r;
            break;
        }
        got += 1;
        const p = d.ptr orelse continue;
        const at = @intFromPtr(p);
        if (lag == 0 or at < base or at >= base + size) {
            _ = buf_free(p);
            continue;
        }
        const c = (at - base) / chunk;
        if (count > 0 and held[(first + count - 1) % held.len].c == c) {
            held[(first + count - 1) % held.len].n += 1;
            continue;
        }
        held[(first + count) % held.len] = .{ .c = c, .n = 1 };
        count += 1;
        if (count > lag) {
            _ = pool_release(@ptrFromInt(base + held[first].c * chunk), held[first].n);
            first = (first + 1) % held.len;
            count -= 1;
        }
    }
    while (count > 0) : (count -= 1) {
        _ = pool_release(@ptrFromInt(base + held[first].c * chunk), held[first].n);
        first = (first + 1) % held.len;
    }
    return rc;
}

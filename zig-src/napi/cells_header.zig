//! The header kc_cells_alloc puts before each block of cells (zig-src/root.zig), shared with the
//! Node-API companion (addon.zig), whose cells buffers' backing-store deleter calls `release`.
//! Here, beside the addon, because a module imports nothing above its root's folder; root.zig
//! imports it as "napi/cells_header.zig".
const std = @import("std");

/// Before the cells, 48 bytes, so that the cells stay 16-byte aligned (malloc's alignment).
pub const Header = extern struct {
    /// kc_cells_release of the library copy that allocated the block: what the companion's
    /// finaliser calls (it binds no library for cells: any copy's block goes back to its own).
    release: *const fn (?[*]u64) callconv(.c) void,
    /// Unlists the block from the allocating copy's registry of live blocks, frees it and
    /// counts it out of that copy's live count: what another copy's kc_cells_release or
    /// kc_cells_pin calls when it takes the state to `released` with no pin, once (the
    /// allocating copy's own calls unlist and free under the registry's lock).
    destroy: *const fn ([*]u64) callconv(.c) void,
    /// Pins in the low 32 bits (`pin_mask`), `released` above them. Atomic accesses only.
    state: u64,
    /// `magic ^ address of the cells`: the companion refuses an address without it.
    check: u64,
    /// The cells' size in bytes (count * 8): the companion refuses a longer view (it made one
    /// over whatever memory came after the block).
    bytes: u64,
    /// Zero: keeps the size a multiple of 16.
    reserved: u64 = 0,
};

comptime {
    std.debug.assert(@sizeOf(Header) == 48 and @sizeOf(Header) % 16 == 0);
}

pub const pin_mask: u64 = 0xffff_ffff;
/// Set once by kc_cells_release: no ArrayBuffer (nor C caller) reaches the cells any more.
pub const released: u64 = 1 << 32;
/// Set once by the companion's `cells` as it makes the block's one ArrayBuffer: a second view
/// (a second `cells` call for the address) would give the block a second deleter, a second
/// kc_cells_release, and a double free.
pub const viewed: u64 = 1 << 33;
pub const magic: u64 = 0x6b63_656c_6c73_2500; // "kcells%\0"

/// The header of the cells at `cells`.
pub fn of(cells: [*]u64) *Header {
    return @ptrFromInt(@intFromPtr(cells) - @sizeOf(Header));
}

/// The header of the cells at `at` if a live block of kc_cells_alloc's is there by its check
/// word, else null: for the library and the companion (`validNoFault`) off Linux. It reads the
/// 48 bytes before `at` in place: an address whose bytes there are unmapped faults, as free(3) of
/// such an address would, and so does a freed block's once the C library gave its memory back to
/// the system. The library's kc_cells_release and kc_cells_pin look an address up in their copy's
/// registry of live blocks first and read another copy's header only through a copy that cannot
/// fault (zig-src/root.zig, `cells_registry`, `foreignCells`), so no address faults there. A
/// cell address is 16-byte aligned past a 48-byte header, so the check word is read only at an
/// aligned address that a block's memory would hold: a pointer inside a block, a freed block's
/// (freeCells clears its check), or one into other readable memory fails the check. One load
/// and a compare.
pub fn valid(at: usize) ?*Header {
    if (at < @sizeOf(Header) or at % 16 != 0) return null;
    const h = of(@ptrFromInt(at));
    return if (h.check == magic ^ at) h else null;
}

/// The header of the cells at `at` if a live block of kc_cells_alloc's is there by its check
/// word, else null, never faulting: on Linux the header is first copied out (`copyNoFault`),
/// which answers false for memory not mapped or not readable, and read in place only once the
/// copy's check word matched; elsewhere, `valid`. For the companion's `cells`: before, it read
/// the header in place (`valid`), and an address at the start of a mapping (the bytes before it
/// unmapped), or a large block's after its free (the C library unmaps it), crashed the process.
/// A block freed between the copy and the caller's read is the caller's use after free, as for
/// free(3).
pub fn validNoFault(at: usize) ?*Header {
    if (at < @sizeOf(Header) or at % 16 != 0) return null;
    if (@import("builtin").os.tag != .linux) return valid(at);
    var copy: Header = undefined;
    if (!copyNoFault(std.mem.asBytes(&copy), at - @sizeOf(Header))) return null;
    if (copy.check != magic ^ at) return null;
    return of(@ptrFromInt(at));
}

/// Whether process_vm_readv was refused here (ENOSYS: qemu-user implements none; EPERM or
/// ENOSYS: a seccomp filter, as some containers' are): `copyNoFault` then goes through a pipe at
/// once. Monotonic: a hint only; either way of copying is right on its own.
pub var vm_readv_refused = std.atomic.Value(bool).init(false);

/// Copies `dst.len` bytes at `src` into `dst` without reading them in place; false (nothing
/// known) where they are not all mapped and readable, never a fault. process_vm_readv of this
/// process answers EFAULT for such memory; where it is refused (`vm_readv_refused`), a pipe of
/// this call's own does the same: write(2) copies from `src` and answers EFAULT (qemu-user
/// checks the guest's pages the same way), read(2) brings the bytes back. Before the pipe, a
/// refused process_vm_readv refused every other copy's block (TypeScript's pin of one threw).
pub fn copyNoFault(dst: []u8, src: usize) bool {
    const linux = std.os.linux;
    if (!vm_readv_refused.load(.monotonic)) {
        const local = [1]std.posix.iovec{.{ .base = dst.ptr, .len = dst.len }};
        const remote = [1]std.posix.iovec_const{.{ .base = @ptrFromInt(src), .len = dst.len }};
        const n = linux.process_vm_readv(linux.getpid(), &local, &remote, 0);
        switch (linux.E.init(n)) {
            .SUCCESS => return n == dst.len, // short: its end is not readable
            .FAULT => return false,
            // Not allowed here: the pipe from now on.
            .NOSYS, .PERM => vm_readv_refused.store(true, .monotonic),
            else => {}, // the pipe, this time
        }
    }
    std.debug.assert(dst.len <= std.heap.page_size_min); // one write fits the pipe's buffer
    var fds: [2]i32 = undefined;
    // Out of descriptors: nothing known, refused.
    if (linux.E.init(linux.pipe2(&fds, .{ .CLOEXEC = true, .NONBLOCK = true })) != .SUCCESS) return false;
    defer {
        _ = linux.close(fds[0]);
        _ = linux.close(fds[1]);
    }
    const w = while (true) {
        const w = linux.write(fds[1], @ptrFromInt(src), dst.len);
        if (linux.E.init(w) != .INTR) break w;
    };
    // EFAULT, or a short copy (its end not readable).
    if (linux.E.init(w) != .SUCCESS or w != dst.len) return false;
    const r = while (true) {
        const r = linux.read(fds[0], dst.ptr, dst.len);
        if (linux.E.init(r) != .INTR) break r;
    };
    return linux.E.init(r) == .SUCCESS and r == dst.len;
}

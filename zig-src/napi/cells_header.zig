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
/// word, else null: for the companion's `cells` (ffi/napi.ts passes it only addresses that
/// kc_cells_alloc just returned), and for the library off Linux. It reads the 48 bytes before
/// `at` in place: an address whose bytes there are unmapped faults, as free(3) of such an
/// address would, and so does a freed block's once the C library gave its memory back to the
/// system. The library's kc_cells_release and kc_cells_pin look an address up in their copy's
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

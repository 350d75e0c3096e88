//! Buffer pool: the native memory of small `kc_desc_make` buffers (the bytes a TypeScript
//! zero-copy channel carries), carved from chunks of one reserved region instead of one malloc
//! per value.
//!
//! Why: a receiving isolate makes each value a view of native memory, and in V8 a new
//! ArrayBuffer per value costs ~1 µs (a backing store, the glibc arena lock, the sweeper's
//! free), more than the whole rest of a receive. With the pool, an isolate wraps a whole chunk
//! in one ArrayBuffer the first time it meets a value in it and hands out `Uint8Array`s over
//! that (~30 ns each), the way Node's `Buffer` pool does for small buffers.
//!
//! How memory comes back (each chunk has one word, `Pool.words`):
//! - A sending thread bump-allocates slices from the current chunk of its stripe (16 stripes,
//!   a thread keeps one; a stripe has a lock that only threads sharing it contend for). When the
//!   chunk is full the stripe *retires* it: it adds `retired - n` to its word, n being the slices
//!   it handed out.
//! - Every freed slice adds 1 (`free`), and an isolate's mapping adds the count of the views it
//!   made when its ArrayBuffer is collected (`release`).
//! - The word reaches exactly `retired` once every slice is freed after the retire, and whoever
//!   takes it there puts the chunk on the free list. Before the retire the word stays below
//!   `retired` (at most n), after it at most `retired`, so the moment is unique.
//!
//! The region is reserved (MAP_NORESERVE: pages cost memory only once touched) and never
//! unmapped while the library is loaded: an isolate's ArrayBuffer may outlive everything else.
//! When the region is used up, or the reservation failed, callers fall back to malloc.
const std = @import("std");
const test_wait = @import("../test_wait.zig");
const posix = std.posix;
const assert = std.debug.assert;

/// Slices at most this long come from the pool; longer values get a malloc of their own.
pub const max_slice: usize = 16 * 1024;
/// At most this much of the next slice is prefetched (`prefetchNext`).
const prefetch_max: usize = 2048;
/// Slices start on 16-byte boundaries. src/codec.ts's `POOL_SLICE_ALIGN` is this number: a
/// releasable chunk buffer's two bitmaps (the values received, and released, by `releaseBytes`)
/// keep one bit per 16-byte slot of the chunk, which takes every slice to start in a slot of
/// its own (with a smaller alignment two values would share a bit).
const slice_align: usize = 16;
comptime {
    // tests/release_test.ts compares the native step between two slices with POOL_SLICE_ALIGN.
    if (slice_align != 16) @compileError("slice_align changed: src/codec.ts's POOL_SLICE_ALIGN (one bitmap bit per 16-byte slot; the shifts by 4 in receivedAt and releaseBytes) says 16: change them together");
}
/// Safe builds (Debug, ReleaseSafe): the pool keeps a bit per 16-byte slot saying a slice
/// handed out starts there and was not freed yet (`Pool.live`), and `free` panics where it is
/// not set: a second free of a slice, or an address inside one. ReleaseFast keeps none and pays
/// nothing; there such a free is undefined (include/kcoro.h, kc_buf_free): counted as another
/// slice's, it may give the chunk back while a slice in it is still in use.
const track_live = std.debug.runtime_safety;
/// Safe builds: the carvings of a chunk take turns between this many *phases*: a carving in
/// phase k starts its first slice `k * slice_align` bytes into the chunk and rounds every
/// slice to `carve_step` bytes, so its slices start only on slots of residue k (mod
/// `carve_phases`). A buffer kept past its chunk's return (returned twice, or another buffer of
/// its chunk returned twice so that the chunk came back under it) and freed after the chunk was
/// carved again then lies on a slot where the new carving starts no slice (live bit clear):
/// `free` panics, naming an earlier carving. Before, the new carving laid its slices out as the
/// one before, the stale address started a live buffer of it, and the free took that buffer's
/// place silently (its owner's later free then panicked, blamed as a second free, or its chunk
/// came back while it was in use). Four phases: a stale address from 1, 2 or 3 carvings back is
/// told (with two, only from 1 back: a chunk that came back twice under a kept buffer, as a
/// busy pool's chunks do between a buffer's hand-out and its late second free, had its layout
/// again). What stays undetectable: a stale address from a multiple of four carvings back that
/// starts a live buffer of the current one is that buffer's address, and `kc_buf_free` takes
/// nothing but the address (the ABI has no word to carry a generation in; a generation per
/// chunk, kept where the address cannot name it, tells nothing a phase does not). Costs safe
/// builds up to 48 more bytes per slice (up to 16 with two phases) and one byte per chunk;
/// ReleaseFast keeps one phase (`carve_step` = `slice_align`), and POOL_SLICE_ALIGN's 16-byte
/// slots still hold a slice start each (a slice of a safe build spans four).
const carve_phases: usize = if (track_live) 4 else 1;
const carve_step: usize = slice_align * carve_phases;
/// A chunk's word once its stripe let go of it (see the module comment).
const retired: u32 = 1 << 31;
const none: u32 = std.math.maxInt(u32);
const stripe_count = 16;

const Stripe = struct {
    /// 0 free, 1 held. Only threads that drew the same stripe contend for it.
    lock: std.atomic.Value(u32) align(std.atomic.cache_line) = .init(0),
    /// The chunk being carved (`none`: none yet).
    chunk: u32 = none,
    /// Bytes of it handed out.
    used: u32 = 0,
    /// Slices of it handed out.
    count: u32 = 0,

    fn acquire(s: *Stripe) void {
        // Acquire: pairs with `unlock`'s release, so the previous holder's chunk, used and
        // count are seen.
        while (s.lock.cmpxchgWeak(0, 1, .acquire, .monotonic) != null) std.atomic.spinLoopHint();
    }

    fn unlock(s: *Stripe) void {
        // Release: publishes chunk, used and count to the next holder (`acquire`).
        s.lock.store(0, .release);
    }
};

pub const Pool = struct {
    region: []align(std.heap.page_size_min) u8,
    chunk_shift: u5,
    /// Per chunk: the free/retire word (module comment).
    words: []std.atomic.Value(u32),
    /// Per chunk: the next chunk on the free list (`none` ends it); while a stripe carves the
    /// chunk (it is on no list then), how many slices it handed out so far, which
    /// `releaseChecked` reads to refuse a count above it (atomic accesses then).
    links: []u32,
    free_mutex: std.Thread.Mutex = .{},
    free_head: u32 = none,
    /// Chunks never handed out start here.
    top: u32 = 0,
    stripes: [stripe_count]Stripe = [_]Stripe{.{}} ** stripe_count,
    /// Safe builds (`track_live`): one bit per `slice_align` slot of the region, set while a
    /// slice handed out (`alloc`) starts there and was not freed by address (`free`); a chunk's
    /// bits are cleared when a stripe takes it (`take`), as slices counted freed by
    /// `release`/`releaseChecked` (which name no slice) leave theirs set. Reserved as the region
    /// is (pages cost memory only once touched): 1/128 of its size.
    live: if (track_live) []align(std.heap.page_size_min) u8 else void,
    /// Safe builds: per chunk, the phase of its current (or last) carving (`carve_phases`), set
    /// by `startCarving`; `take` sets a chunk's first to `carve_phases - 1`, so its first
    /// carving is in phase 0. Reserved as `live` is.
    phases: if (track_live) []align(std.heap.page_size_min) u8 else void,

    /// Reserves `chunks << chunk_shift` bytes; `words` and `links` hold one entry per chunk.
    pub fn init(chunk_shift: u5, words: []std.atomic.Value(u32), links: []u32) !Pool {
        assert(words.len == links.len and words.len > 0 and words.len < none);
        assert(@as(usize, 1) << chunk_shift >= max_slice);
        const region = try reserve(words.len << chunk_shift);
        errdefer posix.munmap(region);
        const live = if (track_live) try reserve(region.len / slice_align / 8) else {};
        errdefer if (track_live) posix.munmap(live);
        const phases = if (track_live) try reserve(words.len) else {};
        return .{ .region = region, .chunk_shift = chunk_shift, .words = words, .links = links, .live = live, .phases = phases };
    }

    /// `len` bytes of address space, zero pages that cost memory only once touched.
    fn reserve(len: usize) ![]align(std.heap.page_size_min) u8 {
        return posix.mmap(
            null,
            len,
            posix.PROT.READ | posix.PROT.WRITE,
            .{ .TYPE = .PRIVATE, .ANONYMOUS = true, .NORESERVE = true },
            -1,
            0,
        );
    }

    /// Unmaps the region: only for a pool nobody can reach any more (tests).
    pub fn deinit(p: *Pool) void {
        posix.munmap(p.region);
        if (track_live) posix.munmap(p.live);
        if (track_live) posix.munmap(p.phases);
        p.* = undefined;
    }

    /// Safe builds: the `live` word of the slot at byte `offset` of the region, and its bit.
    fn liveBit(p: *Pool, offset: usize) struct { word: *std.atomic.Value(u64), mask: u64 } {
        comptime assert(track_live);
        const slot = offset / slice_align;
        const words: [*]std.atomic.Value(u64) = @ptrCast(p.live.ptr);
        assert(slot / 64 < p.live.len / 8);
        return .{ .word = &words[slot / 64], .mask = @as(u64, 1) << @intCast(slot % 64) };
    }

    /// Safe builds: whether `ptr` (in the region) starts a slice handed out and not freed by
    /// address since: what `free` checks before it counts a slice freed.
    pub fn isLive(p: *Pool, ptr: *const anyopaque) bool {
        const b = p.liveBit(@intFromPtr(ptr) - @intFromPtr(p.region.ptr));
        // Monotonic: as in `markFreed`.
        return b.word.load(.monotonic) & b.mask != 0;
    }

    /// Safe builds: clears the live bit of the slice at `ptr` (in the region); false, changing
    /// nothing, if it was not set (a second free, or an address that starts no live slice).
    pub fn markFreed(p: *Pool, ptr: *const anyopaque) bool {
        const b = p.liveBit(@intFromPtr(ptr) - @intFromPtr(p.region.ptr));
        // Monotonic: the slice reached its freer after `alloc` set the bit, through whatever
        // handed it over (a channel: it orders the two); an RMW, so the bits of neighbouring
        // slices that other threads set or clear at once are kept.
        return b.word.fetchAnd(~b.mask, .monotonic) & b.mask != 0;
    }

    pub fn chunkBytes(p: *const Pool) usize {
        return @as(usize, 1) << p.chunk_shift;
    }

    /// The chunk that `ptr` lies in, or null for memory outside the pool.
    pub fn chunkOf(p: *const Pool, ptr: *const anyopaque) ?u32 {
        const a = @intFromPtr(ptr);
        const base = @intFromPtr(p.region.ptr);
        if (a < base or a >= base + p.region.len) return null;
        return @intCast((a - base) >> p.chunk_shift);
    }

    /// A slice of `len` bytes (1 .. max_slice), or null when the pool is used up.
    pub fn alloc(p: *Pool, len: usize) ?[*]u8 {
        assert(len > 0 and len <= max_slice);
        const size: u32 = @intCast(std.mem.alignForward(usize, len, carve_step));
        const s = &p.stripes[stripeIndex()];
        s.acquire();
        defer s.unlock();
        if (s.chunk == none or s.used + size > p.chunkBytes()) {
            if (s.chunk != none) p.retire(s.chunk, s.count);
            s.used = 0;
            s.count = 0;
            s.chunk = p.take() orelse none;
            if (s.chunk == none) return null;
            if (track_live) s.used = p.startCarving(s.chunk, size);
            assert(s.used + size <= p.chunkBytes()); // `init`: a chunk holds `max_slice`
        }
        const at = (@as(usize, s.chunk) << p.chunk_shift) + s.used;
        s.used += size;
        s.count += 1;
        // Release: the count is published before the slice can reach a host that counts its
        // views (`releaseChecked`'s acquire load).
        @atomicStore(u32, &p.links[s.chunk], s.count, .release);
        if (track_live) {
            // Every slice of a carving starts on a slot of its phase (`carve_phases`).
            assert(p.inPhase(s.chunk, at - (@as(usize, s.chunk) << p.chunk_shift)));
            // Monotonic: read by this slice's `free`, which the hand-over orders after this.
            const b = p.liveBit(at);
            const was = b.word.fetchOr(b.mask, .monotonic);
            assert(was & b.mask == 0); // a slot handed out twice
        }
        prefetchNext(p.region.ptr + at + size, @min(size, prefetch_max, p.chunkBytes() - s.used));
        return p.region.ptr + at;
    }

    /// Safe builds: begins a carving of chunk `c`, just taken by the calling stripe, whose first
    /// slice is `size` bytes: in the phase after its last carving's (`carve_phases`), or in
    /// phase 0 where the first slice would not fit after that one's offset (a chunk hardly
    /// larger than `max_slice`, as the tests' are). Its offset: where the first slice starts.
    fn startCarving(p: *Pool, c: u32, size: u32) u32 {
        comptime assert(track_live);
        // Monotonic: only the stripe holding the chunk writes it (`take` before, under the
        // free-list lock this stripe took it under); `free`'s report reads it, ordering nothing.
        const last = @atomicLoad(u8, &p.phases[c], .monotonic);
        assert(last < carve_phases);
        var phase: u8 = @intCast((last + 1) % carve_phases);
        if (phase * slice_align + size > p.chunkBytes()) phase = 0;
        @atomicStore(u8, &p.phases[c], phase, .monotonic);
        return @intCast(phase * slice_align);
    }

    /// Safe builds: whether byte `offset` of chunk `c` lies on a slot where its current
    /// carving's slices start (`carve_phases`).
    fn inPhase(p: *Pool, c: u32, offset: usize) bool {
        comptime assert(track_live);
        // Monotonic: as in `startCarving`.
        return (offset / slice_align) % carve_phases == @atomicLoad(u8, &p.phases[c], .monotonic);
    }

    /// Frees one slice; false if `ptr` is not the pool's (free it elsewhere).
    /// Safe builds: panics for a slice that is not live (`markFreed`: a double free, or an
    /// address inside a slice; one where the chunk's current carving starts no slice, of an
    /// earlier carving in another phase, says so: `carve_phases`), before it counts
    /// anything; and for a free the chunk's count
    /// cannot hold (`releaseChecked` refuses it: more slices freed than it handed out), which
    /// is a slice both counted freed by a host's views (`release`, kc_pool_release) and freed
    /// by address, in either order, when no other slice of the chunk is out. With another one
    /// out the pair cannot be told apart from that one's return (kc_pool_release names no
    /// slice): the chunk's count runs over at that one's return instead, which panics then,
    /// here (`panicOverCount`). Not in `release`'s or `retire`'s assertions: a safe build counts
    /// every free through `releaseChecked`, which keeps the word within the slices handed out
    /// (`release` counts only ReleaseFast's frees). ReleaseFast checks neither.
    pub fn free(p: *Pool, ptr: *const anyopaque) bool {
        const c = p.chunkOf(ptr) orelse return false;
        if (track_live) {
            if (!p.markFreed(ptr)) {
                const offset = @intFromPtr(ptr) - @intFromPtr(p.region.ptr) - (@as(usize, c) << p.chunk_shift);
                if (!p.inPhase(c, offset)) {
                    std.debug.panic("Cannot free pool buffer: it starts no buffer of its chunk {d}'s current carving but lies where the buffers of an earlier carving (1 to {d} carvings back) started: the chunk came back and was carved again since it was handed out (it was freed twice, or another buffer of the chunk was returned twice and the chunk came back under it), or it is an address inside a buffer, received 0x{x}", .{ c, carve_phases - 1, @intFromPtr(ptr) });
                }
                std.debug.panic("Cannot free pool buffer: it starts no buffer handed out and not freed since (freed twice, or an address kc_desc_make did not return), received 0x{x}", .{@intFromPtr(ptr)});
            }
            // Before, counted as one more free: the chunk's word went past the slices it had
            // handed out (a chunk being carved then came back early, at its retire).
            if (!p.releaseChecked(c, 1)) p.panicOverCount(ptr, c);
        } else p.release(c, 1);
        return true;
    }

    /// `free`'s panic for a free of `ptr` that chunk `c`'s count cannot hold: a buffer of `c`
    /// was returned twice, counted freed by kc_pool_release and freed by address. Which one,
    /// only a chunk that handed out one buffer tells (kc_pool_release names none): `ptr` then.
    /// With more, the free that ran the count over may be an innocent buffer's (a buffer
    /// counted by kc_pool_release and freed, then its neighbour freed): the report names the
    /// chunk, and `ptr` only as the free that showed it. Before, it named `ptr` as if it were
    /// the one returned twice. A retired chunk's count runs over only once it reached
    /// `retired`: every slice counted back, the chunk on the free list (`ptr` still out), its
    /// `links` entry a free-list link, not the slices it handed out, which nothing keeps then:
    /// the report names the chunk alone. Before, it read the link as that count ("handed out
    /// no other buffer" for a link to chunk 1, blaming `ptr`).
    fn panicOverCount(p: *Pool, ptr: *const anyopaque, c: u32) noreturn {
        @branchHint(.cold);
        // Monotonic: a report, ordering nothing (`releaseChecked` refused the free at the word
        // it read; only a stripe that took the chunk again since, a race the report may lose,
        // moved it back to a carving's).
        if (p.words[c].load(.monotonic) >= retired / 2) {
            std.debug.panic("Cannot free pool buffer: a buffer of chunk {d} was returned twice (counted freed by kc_pool_release and freed too; kc_pool_release names no buffer, so not necessarily this one), its chunk counting every buffer it handed out back already, received 0x{x}", .{ c, @intFromPtr(ptr) });
        }
        // Monotonic: `alloc`'s count of the slices of the chunk being carved (the chunk is on
        // no list: `take` stored it, and only `alloc` changes it until the retire); a report,
        // ordering nothing.
        const handed_out = @atomicLoad(u32, &p.links[c], .monotonic);
        if (handed_out == 1) {
            std.debug.panic("Cannot free pool buffer: it was counted freed by kc_pool_release already (its chunk {d} handed out no other buffer), received 0x{x}", .{ c, @intFromPtr(ptr) });
        }
        std.debug.panic("Cannot free pool buffer: a buffer of chunk {d} was returned twice (counted freed by kc_pool_release and freed too; kc_pool_release names no buffer, so not necessarily this one, which ran the chunk's count over), received 0x{x} (one of {d} buffers the chunk handed out)", .{ c, @intFromPtr(ptr), handed_out });
    }

    /// Counts `n` slices of chunk `c` freed (an isolate's mapping of it was collected, holding
    /// views of n of its slices).
    pub fn release(p: *Pool, c: u32, n: u32) void {
        assert(c < p.words.len and n > 0);
        // AcqRel: release orders this thread's last reads of the slices before the chunk's
        // reuse; acquire, for the thread that takes the word to `retired`, sees every other
        // freer's release and the stripe's retire before it recycles the chunk.
        const after = p.words[c].fetchAdd(n, .acq_rel) +% n;
        assert(after <= retired or after < retired / 2); // never more frees than slices
        if (after == retired) p.recycle(c);
    }

    /// `release` for a count a host passes (`kc_pool_release`): false, changing nothing, for a
    /// chunk never handed out, a count larger than any chunk's slices, more frees than a
    /// chunk being carved has handed out, or more frees than a retired chunk has slices out (a
    /// chunk on the free list has none).
    pub fn releaseChecked(p: *Pool, c: u32, n: u32) bool {
        if (n == 0 or n > p.chunkBytes() / slice_align) return false;
        // Monotonic: `top` only grows (see `take`); a chunk below it was handed out once.
        if (c >= @atomicLoad(u32, &p.top, .monotonic)) return false;
        // Acquire: pairs with `take`'s release store (see there).
        var word = p.words[c].load(.acquire);
        while (true) {
            // Carving: at most a chunk's slices freed so far; retired: `retired` minus the
            // slices still out (module comment).
            const is_retired = word >= retired / 2;
            if (if (is_retired) word +% n > retired else word + n >= retired / 2) return false;
            // Carving: not more than the slices handed out so far (acquire: pairs with `alloc`).
            // Read after `word`: a retire in between changes `word`, and the CAS below fails.
            if (!is_retired and word + n > @atomicLoad(u32, &p.links[c], .acquire)) return false;
            // AcqRel: as in `release`.
            word = p.words[c].cmpxchgWeak(word, word +% n, .acq_rel, .acquire) orelse {
                if (word +% n == retired) p.recycle(c);
                return true;
            };
        }
    }

    /// How many chunks are on the free list or never used (tests).
    pub fn idleChunks(p: *Pool) usize {
        p.free_mutex.lock();
        defer p.free_mutex.unlock();
        var n: usize = p.words.len - p.top;
        var c = p.free_head;
        while (c != none) : (c = p.links[c]) n += 1;
        return n;
    }

    /// Retires every stripe's chunk (tests: afterwards `idleChunks` counts every chunk whose
    /// slices are all freed).
    pub fn retireAll(p: *Pool) void {
        for (&p.stripes) |*s| {
            s.acquire();
            defer s.unlock();
            if (s.chunk != none) p.retire(s.chunk, s.count);
            s.chunk = none;
            s.used = 0;
            s.count = 0;
        }
    }

    fn retire(p: *Pool, c: u32, n: u32) void {
        // AcqRel: as in `release`; the stripe's retire may be the last word on the chunk.
        const after = p.words[c].fetchAdd(retired -% n, .acq_rel) +% (retired -% n);
        assert(after <= retired);
        if (after == retired) p.recycle(c);
    }

    fn take(p: *Pool) ?u32 {
        p.free_mutex.lock();
        defer p.free_mutex.unlock();
        const c = if (p.free_head != none) blk: {
            const c = p.free_head;
            p.free_head = p.links[c];
            break :blk c;
        } else if (p.top < p.words.len) blk: {
            // Monotonic store: `releaseChecked` reads it without the lock.
            @atomicStore(u32, &p.top, p.top + 1, .monotonic);
            // Never carved: its first carving (`startCarving`, the phase after this) is in
            // phase 0. Monotonic: as in `startCarving`.
            if (track_live) @atomicStore(u8, &p.phases[p.top - 1], carve_phases - 1, .monotonic);
            break :blk p.top - 1;
        } else return null;
        // Monotonic: nobody else holds the chunk until this stripe hands out its slices, and
        // those travel to their freers through channels (which order it).
        // The carved count first, then the word (release): a `releaseChecked` that reads the
        // new word (acquire) reads the new count too, not the chunk's old free-list link.
        @atomicStore(u32, &p.links[c], 0, .monotonic); // no slice carved yet (`alloc`)
        if (track_live) {
            // Slices counted freed by `release` left their bits set. Monotonic: nobody frees
            // into a chunk with no slice out; its next slices' bits are set after this.
            const first = p.liveBit(@as(usize, c) << p.chunk_shift).word;
            const n = (p.chunkBytes() / slice_align) / 64;
            for (@as([*]std.atomic.Value(u64), @ptrCast(first))[0..n]) |*w| w.store(0, .monotonic);
        }
        p.words[c].store(0, .release);
        return c;
    }

    fn recycle(p: *Pool, c: u32) void {
        p.free_mutex.lock();
        defer p.free_mutex.unlock();
        p.links[c] = p.free_head;
        p.free_head = c;
    }
};

var next_stripe: std.atomic.Value(u32) = .init(0);
threadlocal var my_stripe: u32 = none;

/// Asks for the lines of the slice this stripe will most likely hand out next (as long as this
/// one, right after it, up to `prefetch_max` bytes) for writing. A chunk comes back only once
/// the receiving isolate's collector freed its views, so its memory is never in cache, and a
/// copy into it waited for every line (1 KiB: ~100 ns, most of a send). The caller copies its
/// value into this slice now; a stream's next value, a few hundred ns later, finds its lines
/// there (kc_desc_make of 1 KiB values in a row: 20-25% faster). Longer values are left to the
/// hardware's own prefetcher, which follows a long copy by itself.
inline fn prefetchNext(next: [*]u8, len: usize) void {
    const line = std.atomic.cache_line;
    var off: usize = 0;
    while (off < len) : (off += line) @prefetch(next + off, .{ .rw = .write, .locality = 3, .cache = .data });
}

/// This thread's stripe: drawn in turn on first use, so up to 16 threads never share one.
fn stripeIndex() u32 {
    if (my_stripe == none) {
        // Monotonic: a ticket; nothing is published through it.
        my_stripe = next_stripe.fetchAdd(1, .monotonic) % stripe_count;
    }
    return my_stripe;
}

// ---------------------------------------------------------------------------------------------
// The library's pool: 1 GiB reserved, 128 KiB chunks, made on first use.

const global_shift: u5 = 17;
const global_chunks = 8192;
comptime {
    // README.md, "Channels from TypeScript" ("A buffer of up to 16 KiB is copied once, by the
    // sender, into a chunk of the library's buffer pool (128 KiB chunks, ..., from 1 GiB of
    // address space reserved once"; "A buffer over 16 KiB"), and src/codec.ts's comments. A
    // change here changes that text too.
    if (max_slice != 16 * 1024) @compileError("max_slice changed: README.md (Channels from TypeScript) says 16 KiB");
    if ((1 << global_shift) != 128 * 1024) @compileError("the pool's chunk size changed: README.md (Channels from TypeScript) says 128 KiB");
    if (global_chunks << global_shift != 1 << 30) @compileError("the pool's region changed: README.md (Channels from TypeScript) says 1 GiB");
}
var global_words: [global_chunks]std.atomic.Value(u32) = [_]std.atomic.Value(u32){.init(0)} ** global_chunks;
var global_links: [global_chunks]u32 = undefined;
var global_pool: ?Pool = null;
var global_once = std.once(initGlobal);

fn initGlobal() void {
    global_pool = Pool.init(global_shift, &global_words, &global_links) catch null;
}

/// The library's pool, or null if its region could not be reserved.
pub fn global() ?*Pool {
    global_once.call();
    return if (global_pool) |*p| p else null;
}

// ---------------------------------------------------------------------------------------------

const testing = std.testing;

fn testPool(chunks: usize, shift: u5) !struct { pool: Pool, words: []std.atomic.Value(u32), links: []u32 } {
    const words = try testing.allocator.alloc(std.atomic.Value(u32), chunks);
    errdefer testing.allocator.free(words);
    const links = try testing.allocator.alloc(u32, chunks);
    errdefer testing.allocator.free(links);
    return .{ .pool = try Pool.init(shift, words, links), .words = words, .links = links };
}

test "pool: slices come from chunks, a chunk comes back once its slices are freed and it is retired" {
    var t = try testPool(2, 14); // 2 chunks of 16 KiB
    defer testing.allocator.free(t.words);
    defer testing.allocator.free(t.links);
    defer t.pool.deinit();
    const p = &t.pool;

    var slices: [16][*]u8 = undefined;
    for (&slices, 0..) |*s, i| {
        s.* = p.alloc(1000).?; // 1008 bytes each: 16 fit a chunk
        @memset(s.*[0..1000], @intCast(i));
        try testing.expectEqual(@as(?u32, 0), p.chunkOf(s.*));
    }
    const next = p.alloc(300).?; // the first chunk is full: the stripe retires it
    try testing.expectEqual(@as(?u32, 1), p.chunkOf(next));
    try testing.expect(p.alloc(max_slice) == null); // no room left, no chunk left
    try testing.expectEqual(@as(usize, 0), p.idleChunks());
    for (slices[0..15], 0..) |s, i| {
        try testing.expectEqual(@as(u8, @intCast(i)), s[999]); // nobody wrote over a live slice
        try testing.expect(p.free(s));
    }
    try testing.expectEqual(@as(usize, 0), p.idleChunks()); // one slice still out
    try testing.expect(!p.releaseChecked(0, 2)); // only one is out: refused, nothing changed
    try testing.expect(p.releaseChecked(0, 1)); // an isolate's mapping held the last one
    try testing.expectEqual(@as(usize, 1), p.idleChunks());
    try testing.expect(!p.releaseChecked(0, 1)); // on the free list: nothing is out
    try testing.expect(!p.releaseChecked(1, 0));
    try testing.expect(!p.releaseChecked(1, 1025)); // more than a 16 KiB chunk's slices
    var outside: u8 = 0;
    try testing.expect(!p.free(&outside));
    try testing.expect(p.free(next));
    p.retireAll();
    try testing.expectEqual(@as(usize, 2), p.idleChunks());
}

test "pool: threads allocate and free across each other; every chunk comes back" {
    const wd = try test_wait.Watchdog.arm(@src(), test_wait.stress_ns);
    defer wd.stop();
    var t = try testPool(64, 14);
    defer testing.allocator.free(t.words);
    defer testing.allocator.free(t.links);
    defer t.pool.deinit();
    const p = &t.pool;

    // Each producer sends slices, stamped with its id and sequence, to one consumer through a
    // bounded queue; the consumer checks each stamp and frees the slice.
    const Q = struct {
        mutex: std.Thread.Mutex = .{},
        items: [256]?[*]u8 = [_]?[*]u8{null} ** 256,
        head: usize = 0,
        tail: usize = 0,
        fallbacks: std.atomic.Value(u32) = .init(0),

        fn put(q: *@This(), s: [*]u8) void {
            while (true) {
                q.mutex.lock();
                if (q.tail - q.head < q.items.len) {
                    q.items[q.tail % q.items.len] = s;
                    q.tail += 1;
                    q.mutex.unlock();
                    return;
                }
                q.mutex.unlock();
                std.Thread.yield() catch {};
            }
        }

        fn get(q: *@This()) ?[*]u8 {
            q.mutex.lock();
            defer q.mutex.unlock();
            if (q.head == q.tail) return null;
            defer q.head += 1;
            return q.items[q.head % q.items.len];
        }

        fn produce(q: *@This(), pool: *Pool, id: u8, n: u32, seed: u64) void {
            var rng = std.Random.DefaultPrng.init(seed);
            var i: u32 = 0;
            while (i < n) {
                const len = rng.random().intRangeAtMost(usize, 6, 3000);
                const s = pool.alloc(len) orelse {
                    _ = q.fallbacks.fetchAdd(1, .monotonic);
                    std.Thread.yield() catch {};
                    continue;
                };
                s[0] = id;
                std.mem.writeInt(u32, s[1..5], i, .little);
                s[len - 1] = id;
                q.put(s);
                i += 1;
            }
        }
    };
    var q: Q = .{};
    const n = 20_000;
    var threads: [3]std.Thread = undefined;
    for (&threads, 0..) |*th, i| th.* = try std.Thread.spawn(.{}, Q.produce, .{ &q, p, @as(u8, @intCast(i)), n, 0x5eed + i });
    var next = [_]u32{0} ** 3;
    var got: usize = 0;
    while (got < 3 * n) {
        const s = q.get() orelse {
            std.Thread.yield() catch {};
            continue;
        };
        const id = s[0];
        try testing.expect(id < 3);
        try testing.expectEqual(next[id], std.mem.readInt(u32, s[1..5], .little));
        next[id] += 1;
        try testing.expect(p.free(s));
        got += 1;
    }
    for (&threads) |*th| th.join();
    p.retireAll();
    try testing.expectEqual(@as(usize, 64), p.idleChunks());
}

test "pool: safe builds tell a second free of a slice, and an address inside one, from a live slice" {
    if (!track_live) return error.SkipZigTest; // ReleaseFast keeps no bits: undefined there
    var t = try testPool(2, 14);
    defer testing.allocator.free(t.words);
    defer testing.allocator.free(t.links);
    defer t.pool.deinit();
    const p = &t.pool;
    const a = p.alloc(100).?;
    const b = p.alloc(100).?;
    try testing.expect(p.isLive(a) and p.isLive(b));
    try testing.expect(!p.isLive(a + 16)); // inside `a`: starts no slice
    try testing.expect(p.free(a));
    // `free` panics here: before, a second free of `a` was counted as `b`'s, the chunk came
    // back once retired, and `b` was carved again while still in use.
    try testing.expect(!p.isLive(a));
    try testing.expect(!p.markFreed(a));
    try testing.expect(p.isLive(b)); // its neighbour's bit is untouched
    // Counted freed by a host's views (no address): its bit stays, and the chunk's next take
    // clears it.
    try testing.expect(p.releaseChecked(0, 1));
    try testing.expect(p.isLive(b));
    p.retireAll();
    try testing.expectEqual(@as(usize, 2), p.idleChunks());
    const c = p.alloc(200).?; // a chunk taken again: every bit cleared, then its first slice's set
    const d = p.alloc(200).?;
    try testing.expect(p.isLive(c) and p.isLive(d));
    try testing.expect(!p.isLive(d + 208)); // where no slice starts yet
    try testing.expect(p.free(c) and p.free(d));
    try testing.expect(!p.isLive(c) and !p.isLive(d));
}

/// Runs `body` in a forked child, which must die of a panic (SIGABRT) whose report contains
/// `needle`; its stderr comes back through a pipe, read until the child ends or a bound passes.
fn expectChildPanics(comptime body: fn () void, needle: []const u8) !void {
    const fds = try posix.pipe();
    const pid = try posix.fork();
    if (pid == 0) {
        posix.setrlimit(.CORE, .{ .cur = 0, .max = 0 }) catch {}; // no core file
        posix.close(fds[0]);
        // Its panic's report would only look like a failure in the run's output.
        posix.dup2(fds[1], posix.STDERR_FILENO) catch posix.exit(2);
        body();
        posix.exit(0);
    }
    posix.close(fds[1]);
    defer posix.close(fds[0]);
    var buf: [4096]u8 = undefined;
    const text, const res = try test_wait.childOutput(pid, fds[0], &buf, test_wait.test_ns, "the forked child (it should panic)");
    const len = text.len;
    if (std.mem.indexOf(u8, text, needle) == null) {
        std.debug.print("the child wrote: {s}\n", .{text[0..@min(len, 600)]});
        return error.TestUnexpectedResult;
    }
    try testing.expect(posix.W.IFSIGNALED(res.status));
    try testing.expectEqual(@as(u32, posix.SIG.ABRT), posix.W.TERMSIG(res.status));
}

/// A pool of 2 chunks of 16 KiB in page memory, for a forked child (which exits 2 if it cannot).
fn childPool() Pool {
    const words = std.heap.page_allocator.alloc(std.atomic.Value(u32), 2) catch posix.exit(2);
    const links = std.heap.page_allocator.alloc(u32, 2) catch posix.exit(2);
    return Pool.init(14, words, links) catch posix.exit(2);
}

/// In a forked child: a slice of 100 bytes of `p`, which must be in chunk `chunk` (else the
/// child exits 2, as for a pool used up).
fn childAlloc(p: *Pool, chunk: u32) [*]u8 {
    const s = p.alloc(100) orelse posix.exit(2);
    if (p.chunkOf(s) != chunk) posix.exit(2);
    return s;
}

/// In a forked child: returns `s` (of chunk 0) twice, within its chunk's count (another of
/// its slices out): a host's views count it freed (kc_pool_release), then it is freed by
/// address. The child exits 2 if either is refused.
fn childReturnTwice(p: *Pool, s: [*]u8) void {
    if (!p.releaseChecked(0, 1)) posix.exit(2); // a host's views counted `s` freed
    if (!p.free(s)) posix.exit(2); // and it is freed too
}

test "pool: safe builds: a second free of a slice panics, before it counts anything" {
    if (!track_live) return error.SkipZigTest;
    // In a child, which must die of the panic (SIGABRT); before, it went on, the second free
    // counted as its neighbour's, and the chunk came back under that live neighbour. The report
    // names the buffer (before, it said none).
    try expectChildPanics(struct {
        fn body() void {
            var p = childPool();
            const a = childAlloc(&p, 0);
            _ = childAlloc(&p, 0); // its neighbour, still out
            if (!p.free(a)) posix.exit(2);
            _ = p.free(a); // panics
        }
    }.body, "Cannot free pool buffer: it starts no buffer handed out and not freed since (freed twice, or an address kc_desc_make did not return), received 0x");
}

test "pool: safe builds: a slice counted freed by a host's views and then freed by address panics" {
    if (!track_live) return error.SkipZigTest;
    // A double return (kc_pool_release counted it, then kc_buf_free): before, the free counted
    // it a second time, the chunk's word went past the slices it had handed out, and the chunk
    // came back at its retire while a slice carved later was in use. In a child, which must die
    // of the panic (SIGABRT), before it counts anything; the report names the buffer and chunk.
    try expectChildPanics(struct {
        fn body() void {
            var p = childPool();
            const a = childAlloc(&p, 0);
            if (!p.releaseChecked(0, 1)) posix.exit(2); // a host's views counted `a` freed
            _ = p.free(a); // panics
        }
    }.body, "Cannot free pool buffer: it was counted freed by kc_pool_release already (its chunk 0 handed out no other buffer), received 0x");
}

test "pool: safe builds: a double return shown at another buffer's free names the chunk, not that buffer" {
    if (!track_live) return error.SkipZigTest;
    // `a` counted freed by a host's views and freed by address (two buffers of the chunk out:
    // the count holds it), then its innocent neighbour `b` freed: that free runs the chunk's
    // count over. kc_pool_release names no buffer, so which one was returned twice cannot be
    // told. Before, the report named `b` as the buffer ("received 0x... in chunk 0").
    try expectChildPanics(struct {
        fn body() void {
            var p = childPool();
            const a = childAlloc(&p, 0);
            const b = childAlloc(&p, 0);
            childReturnTwice(&p, a); // still within the count
            _ = p.free(b); // panics
        }
    }.body, "Cannot free pool buffer: a buffer of chunk 0 was returned twice (counted freed by kc_pool_release and freed too; kc_pool_release names no buffer, so not necessarily this one, which ran the chunk's count over), received 0x");
}

test "pool: safe builds: a double return in a retired chunk, shown at another buffer's free after the chunk came back, names the chunk, not that buffer" {
    if (!track_live) return error.SkipZigTest;
    // Chunk 0 retired with `a` and `b` out; `a` counted freed by a host's views and freed by
    // address: the count reaches `retired` and chunk 0 goes on the free list, in front of chunk
    // 1, while `b` is out. `b`'s free then runs the count over. The chunk's `links` entry is
    // its free-list link by then (1, chunk 1), not the slices it handed out: before, the report
    // read it as "handed out 1" and blamed `b` ("it was counted freed by kc_pool_release
    // already (its chunk 0 handed out no other buffer)"); with an empty free list it said "one
    // of 4294967295 buffers".
    try expectChildPanics(struct {
        fn body() void {
            var p = childPool();
            const a = childAlloc(&p, 0);
            const b = childAlloc(&p, 0);
            p.retireAll(); // chunk 0 retired, 2 out
            const y = childAlloc(&p, 1); // chunk 1, freed and retired:
            if (!p.free(y)) posix.exit(2);
            p.retireAll(); // it comes back, first on the free list
            childReturnTwice(&p, a); // chunk 0 comes back
            if (p.idleChunks() != 2) posix.exit(2);
            _ = p.free(b); // panics
        }
    }.body, "Cannot free pool buffer: a buffer of chunk 0 was returned twice (counted freed by kc_pool_release and freed too; kc_pool_release names no buffer, so not necessarily this one), its chunk counting every buffer it handed out back already, received 0x");
}

test "pool: safe builds: a buffer whose chunk came back under it (another returned twice) and was carved again panics at its free, naming the earlier carving" {
    if (!track_live) return error.SkipZigTest;
    // As the test above, but chunk 0 is carved again before `b`'s free. Before, the new carving
    // laid out its slices as the last one: `b`'s address started a live buffer of it (`y`),
    // and `b`'s free took `y`'s place silently (the child exited 0 here). Now the new carving is
    // in the next phase: `b` starts no buffer of it, and the report says why.
    try expectChildPanics(struct {
        fn body() void {
            var p = childPool();
            const a = childAlloc(&p, 0);
            const b = childAlloc(&p, 0);
            p.retireAll(); // chunk 0 retired, 2 out
            childReturnTwice(&p, a); // chunk 0 comes back under `b`
            _ = childAlloc(&p, 0); // chunk 0, carved again: `x`
            _ = childAlloc(&p, 0); // `y`
            _ = p.free(b); // panics
        }
    }.body, "Cannot free pool buffer: it starts no buffer of its chunk 0's current carving but lies where the buffers of an earlier carving (1 to 3 carvings back) started: the chunk came back and was carved again since it was handed out (it was freed twice, or another buffer of the chunk was returned twice and the chunk came back under it), or it is an address inside a buffer, received 0x");
}

test "pool: safe builds: a second free of a buffer after its chunk came back and was carved again panics" {
    if (!track_live) return error.SkipZigTest;
    // Before, the chunk's next carving handed out `a`'s address again (`x`), and the second free
    // of `a` freed `x`, in use, silently (the child exited 0 here).
    try expectChildPanics(struct {
        fn body() void {
            var p = childPool();
            const a = childAlloc(&p, 0);
            if (!p.free(a)) posix.exit(2);
            p.retireAll(); // every slice back: chunk 0 comes back
            _ = childAlloc(&p, 0); // chunk 0, carved again: `x`
            _ = p.free(a); // panics
        }
    }.body, "Cannot free pool buffer: it starts no buffer of its chunk 0's current carving but lies where the buffers of an earlier carving (1 to 3 carvings back) started");
}

test "pool: safe builds: a chunk's carvings take turns between four phases, so a carving's addresses are none of the last three's; four carvings back they may be" {
    if (!track_live) return error.SkipZigTest;
    var t = try testPool(1, 14); // 1 chunk of 16 KiB
    defer testing.allocator.free(t.words);
    defer testing.allocator.free(t.links);
    defer t.pool.deinit();
    const p = &t.pool;
    var starts: [carve_phases + 1][2]usize = undefined;
    for (&starts) |*carving| {
        for (carving) |*at| {
            const s = p.alloc(100).?; // 128 bytes apart (64-byte steps in safe builds)
            at.* = @intFromPtr(s) - @intFromPtr(p.region.ptr);
        }
        try testing.expectEqual(carving[0] + 128, carving[1]);
        for (carving) |at| try testing.expect(p.free(p.region.ptr + at));
        p.retireAll(); // the chunk comes back, to be carved again
    }
    // A chunk's first carving is in phase 0, each next in the next phase: no two of four in a
    // row share a slice start, so a stale address from 1 to 3 carvings back starts no buffer.
    for (starts[0..carve_phases], 0..) |carving, k| {
        try testing.expectEqual(k * slice_align, carving[0]);
        for (starts[0..carve_phases], 0..) |other, m| {
            if (m == k) continue;
            for (other) |at| try testing.expect(at != carving[0] and at != carving[1]);
        }
    }
    // The documented limit: four carvings back the layout is the same again, so a stale address
    // from then that starts a live buffer is that buffer's (`kc_buf_free` takes an address only).
    try testing.expectEqual(starts[0], starts[carve_phases]);
    // A first slice that does not fit after its phase's offset starts a carving in phase 0.
    const whole = p.alloc(max_slice).?; // the whole chunk; after 5 carvings, phase 1 is next
    try testing.expectEqual(@as(?u32, 0), p.chunkOf(whole));
    try testing.expectEqual(@intFromPtr(p.region.ptr), @intFromPtr(whole));
    try testing.expect(p.free(whole));
}

test "pool: safe builds: a second free of a buffer after its chunk came back and was carved again twice panics" {
    if (!track_live) return error.SkipZigTest;
    // With two phases the carving two back laid out its slices as `a`'s again: the second free
    // of `a` freed `x`, in use, silently (the child exited 0 here with carve_phases 2).
    try expectChildPanics(struct {
        fn body() void {
            var p = childPool();
            const a = childAlloc(&p, 0);
            if (!p.free(a)) posix.exit(2);
            p.retireAll(); // every slice back: chunk 0 comes back
            const y = childAlloc(&p, 0); // chunk 0, carved again
            if (!p.free(y)) posix.exit(2);
            p.retireAll(); // and back again
            _ = childAlloc(&p, 0); // chunk 0, carved a third time: `x`
            _ = p.free(a); // panics
        }
    }.body, "Cannot free pool buffer: it starts no buffer of its chunk 0's current carving but lies where the buffers of an earlier carving (1 to 3 carvings back) started");
}

test "pool: a slice freed by address and then counted by a host's views is refused, in any build" {
    var t = try testPool(2, 14);
    defer testing.allocator.free(t.words);
    defer testing.allocator.free(t.links);
    defer t.pool.deinit();
    const p = &t.pool;
    const a = p.alloc(100).?;
    try testing.expect(p.free(a));
    try testing.expect(!p.releaseChecked(0, 1)); // the reverse order: KC_EINVAL, nothing counted
    // A legitimate mix of both kinds of return still counts every slice once.
    const b = p.alloc(100).?;
    const c = p.alloc(100).?;
    try testing.expect(p.releaseChecked(0, 1)); // a host's views held `b`
    try testing.expect(p.free(c));
    _ = b;
    p.retireAll();
    try testing.expectEqual(@as(usize, 2), p.idleChunks());
}

test "pool: a host cannot count more views of a chunk being carved than it handed out" {
    var t = try testPool(2, 14);
    defer testing.allocator.free(t.words);
    defer testing.allocator.free(t.links);
    defer t.pool.deinit();
    const p = &t.pool;
    const a = p.alloc(100).?;
    try testing.expectEqual(@as(?u32, 0), p.chunkOf(a));
    // One slice handed out: two freed would let the chunk come back while it is in use.
    try testing.expect(!p.releaseChecked(0, 2));
    _ = p.alloc(100).?;
    try testing.expect(p.releaseChecked(0, 2));
    try testing.expect(!p.releaseChecked(0, 1)); // both are counted freed already
    // The stripe retires it: it comes back now (two slices, two frees).
    p.retireAll();
    try testing.expectEqual(@as(usize, 2), p.idleChunks());
}

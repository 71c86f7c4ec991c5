//! `MmuGather`: unmap now, invalidate once, free afterwards.
//!
//! # The problem
//!
//! Taking memory out of an address space happens in two places that do not see each
//! other. The walker clears descriptors in table memory; the TLBs of every CPU (and their
//! walk caches, which remember *table* entries) keep serving what they loaded before.
//! Until a TLB invalidate covering the old entry has *completed*, any CPU may still
//! translate the old VA to the old frame, by an explicit access or a speculative one
//! (ARMv7 cores speculate loads and table walks freely), and a cached table entry lets the
//! walker read descriptors out of a table that is no longer linked.
//!
//! So the order is fixed:
//!
//! 1. clear the entries (the walker does this, and reports each one here);
//! 2. invalidate every TLB entry and walk-cache entry that may still hold them, and wait
//!    for the invalidates to complete on every CPU (the completion barrier);
//! 3. only then hand the frames back to the allocator: mapped pages, and the table memory
//!    itself.
//!
//! Freeing before step 2 completes is the bug this module exists to prevent. A data page
//! freed early and reused is read or written through the stale translation by the old
//! address space. A table frame freed early and reused is worse: the walker follows a
//! cached pointer into it and interprets whatever now lives there as descriptors, mapping
//! arbitrary physical memory. This is Russell King's 2011 "delay page freeing for SMP and
//! ARMv7 CPUs", and the point of Peter Zijlstra's mail that founded this crate: track the
//! ranges precisely while *zapping* and while *freeing page tables*, flush once, then free.
//!
//! # What the gather records
//!
//! [`MmuGather`] is the [`UnmapSink`] that walkers report to. Per report it keeps:
//!
//! - **a leaf cleared** ([`UnmapSink::leaf_cleared`]): one pending by-VA invalidate at the
//!   leaf's VA, whatever its size. A 64 KiB large page, a 1 MiB section and a 16 MiB
//!   supersection are each *one* TLB entry, and an invalidate by MVA removes the entry
//!   translating that MVA, so one operation anywhere inside the mapping removes it; some
//!   cores cache smaller pieces of big mappings (the Cortex-A15 L1 TLBs hold 4 KiB pieces
//!   of everything), and removing all of them on a by-MVA operation is the core's job, as
//!   Linux arm64 also relies on when it strides its block invalidates by block size. The
//!   frames go into the *frame batch*, to be handed back with
//!   [`Memory::release_mapped`]. An executable leaf also marks the branch predictor for
//!   invalidation;
//! - **a table unlinked** ([`UnmapSink::table_unlinked`]): one pending by-VA invalidate
//!   inside the table's span, which drops the walk-cache entry for the parent descriptor
//!   (a by-VA invalidate also removes cached table-walk entries for that VA). If a leaf
//!   invalidate already pending lies in the span, it does that job and nothing is added:
//!   after a sparse unmap, freeing the emptied tables costs no extra operation. With the
//!   short-descriptor packing (several 1 KiB L2 tables per frame) the walker reports every
//!   1 MiB region whose table lived in a freed frame, so the flush reaches each of them.
//!   Long-descriptor (LPAE) tables are reported with their own spans: 2 MiB for a level-3
//!   table, 1 GiB for a level-2 table (freed after its level-3 tables, each reported
//!   first); a 2 MiB or 1 GiB block is one leaf and one invalidate like any other;
//! - **table memory freed** ([`UnmapSink::table_memory_freed`]): into the frame batch, to
//!   be handed back with [`Memory::free_frames`].
//!
//! Which invalidate a VA gets: for a non-global (nG) entry in an ASID space, by VA and
//! ASID (TLBIMVA). For a global entry (kernel mappings) and everything in the kernel
//! space, by VA for all ASIDs (TLBIMVAA). TLBIMVA with any ASID would also drop a global
//! entry for the VA, but TLBIMVAA says what is meant, does not depend on which ASID the
//! gather was given (the kernel space has none), and is the operation the Cortex-A9
//! erratum 720789 workaround uses anyway, since ASID-tagged broadcasts are what that
//! erratum corrupts.
//!
//! The record is a fixed array of at most [`MAX_PENDING`] (64) operations. Past
//! [`GatherConfig::max_invalidates`] it stops storing VAs and remembers only that it
//! overflowed; the flush then issues one TLBIASID instead (TLBIALL for the kernel space,
//! or when a global entry was recorded, since TLBIASID leaves global entries alone).
//! Nothing is lost by forgetting the VAs: the fallback covers them all. So unmapping 8
//! scattered pages in 64 MiB costs 8 operations (Linux ARM32 issues one per 4 KiB of the
//! tracked range: 16,384), and unmapping 64 MiB densely costs one.
//!
//! ## Fallback and the walk cache
//!
//! TLBIASID drops the ASID's non-global leaf entries and its walk-cache entries: the
//! invalidate-by-ASID operations remove entries of that ASID "from any level of lookup"
//! (the Armv8 AArch32 definitions of TLBIASID/TLBIASIDIS, which restate ARMv7's; the
//! Cortex-A15 TRM tags walk-cache entries with the ASID they were walked under), and Linux
//! frees a process's page tables after a `flush_tlb_mm` (TLBIASID) on teardown. So the
//! fallback after table frees, and a teardown, is one TLBIASID, unless a global entry was
//! cleared (TLBIASID leaves global entries alone: then TLBIALL). A kernel that switches
//! address spaces with its own code, and cannot promise that no walk of a space's tables
//! happens under another ASID, sets [`GatherConfig::asid_flush_drops_walk_cache`] to
//! `false` and gets TLBIALL after table frees.
//!
//! ## Tables and the ASID
//!
//! The invalidate for an unlinked table of an ASID space is by VA *and ASID* (TLBIMVA),
//! like its leaves; a table that may hold global entries (reported `global`) and every
//! table of the kernel space is invalidated for all ASIDs (TLBIMVAA). This is sound
//! because of how the crate switches context ([`crate::arch::switch`]): `TTBR0` is *parked*
//! (`TTBCR.PD0`/`EPD0`, or the kernel's table in `TTBR1`) while the ASID changes, so no
//! walk ever goes through a process's tables under another ASID, and every walk-cache
//! entry for them is tagged with the process's ASID. (With the earlier reserved-ASID
//! switch, ASID 0 was current over each process's `TTBR0` for a moment and speculative
//! walks cached its table entries under ASID 0, which only an all-ASID operation reaches:
//! the Cortex-A15 TRM's warning. The host CPU model test
//! `tlb::cpu_model::tests::reserved_asid_switch_leaves_asid0_walk_entries` shows it.) A
//! pending leaf invalidate inside the table's span drops the walk-cache entry too, so
//! freeing tables after a sparse unmap still costs nothing extra.
//!
//! ## The default threshold: 64
//!
//! Past the threshold one TLBIASID is cheaper than the by-VA operations, but it throws
//! away every entry the address space has in every TLB, which must then be walked again.
//! Others chose 33 (x86), 64 (riscv), 16 (Zircon), 512 (arm64, whose TLBI is cheap and
//! which has range operations that ARMv7 lacks). On ARMv7 the main TLB holds 64 to 128
//! entries on Cortex-A9, 256 on Cortex-A7 and 512 on Cortex-A15 (with 32-entry L1 TLBs in
//! front): an unmap of more than 64 mappings has removed more pages than a Cortex-A9 can
//! even cache, so the per-VA work buys nothing there, and on the larger cores it is
//! already a large bite of what the ASID holds. 64 is also where the fixed record stays
//! small (256 bytes). Kernels that know better set [`GatherConfig::max_invalidates`]
//! (0 to [`MAX_PENDING`]; 0 means "always flush the whole ASID").
//!
//! # Frames to free
//!
//! Waiting frames go first into an open *run* (leaves of one size whose frames follow each
//! other physically, kept as one entry however long), then into a 32-word batch inside the
//! gather, then into *batch frames* borrowed from the caller's allocator with
//! `allocate_frames(1, 4096)` (which must not block): each holds [`ENTRIES_PER_FRAME`]
//! (1020) entry words, like Linux's 1021 pages, because a single leaf is one 32-bit word
//! (frame number + kind; a run or table memory takes two). At most
//! [`GatherConfig::max_batch_frames`] are borrowed (default 9, Linux's bound of about
//! 10,000 pages: it bounds the frames held back and the length of one free loop).
//!
//! When the batch is full and no batch frame can be had (allocator empty, or the limit
//! reached), the gather **flushes now**: it invalidates what it recorded so far, frees
//! what it batched, and continues with empty batches. Every frame it was given was
//! already cleared from the tables and recorded, so this early flush is exactly as safe as
//! the final one. The batch frames are kept across such flushes and returned to the
//! allocator when the gather ends. Nothing is ever dropped.
//!
//! # When it flushes, and how
//!
//! At [`MmuGather::finish`], at [`MmuGather::flush`], on drop of an unfinished gather, and
//! early when the frame batch is full. A flush is:
//!
//! ```text
//! backend.prepare()                          // descriptor writes visible to the walkers
//! invalidate each recorded VA                // or one TLBIASID / TLBIALL (fallback)
//! invalidate_branch_predictor()              // if an executable leaf was cleared
//! backend.complete()                         // one completion barrier (dsb + isb)
//! table_sync.sync_before_table_free()        // only if table memory waits, and a hook is set
//! free every batched frame                   // only now
//! ```
//!
//! Exactly one completion barrier per flush. A flush with nothing recorded issues no
//! barrier at all: frames still waiting then were recorded in an earlier flush that has
//! completed (an early flush happens just *before* the frame that triggered it is batched,
//! and that frame's invalidate was in it), so they are freed directly.
//!
//! # Teardown ("full mm")
//!
//! [`Scope::Teardown`] is for destroying a whole address space: nothing will be mapped
//! there again, so per-VA work is pointless. The gather records no VAs and each flush is
//! one TLBIASID (TLBIALL only if a global entry was reported, or if tables were freed and
//! [`GatherConfig::asid_flush_drops_walk_cache`] was turned off, see above).
//!
//! # Overlapping gathers on one address space
//!
//! Two CPUs may each run a gather on the same address space, with the page-table lock
//! dropped between walker calls (two `munmap`/`madvise(DONTNEED)` of overlapping ranges,
//! say). CPU 1 clears entry E and records it; CPU 0 then finds E already clear and records
//! nothing for it. If CPU 0 finishes first, flushes only its own record and returns, its
//! caller believes the range is gone, while every TLB may still hold E until CPU 1
//! flushes: the caller may now reuse the range or rely on no one writing through the old
//! translation (Linux's `mm_tlb_flush_nested` case). CPU 1's *frames* are safe either way
//! (CPU 1 frees them after its own flush); the danger is CPU 0's promise.
//!
//! So every gather counts itself in an [`InFlight`] that the kernel keeps **next to** its
//! address space (not inside the page tables, not behind the page-table lock: it must be
//! shared by gathers that do not hold that lock). The count goes up when a gather starts
//! and down after its last flush; a gather that finishes while the count shows another
//! gather still in flight does not trust its record and invalidates the whole ASID
//! (everything, for the kernel space), reported as [`Fallback::Nested`]. That flush stands
//! in for the other gathers' records, so it must cover what *they* cleared too: each gather
//! publishes in the [`InFlight`], as it records them, whether it cleared a global entry or
//! unlinked a table, and a nested fallback is a TLBIALL when either was seen (unless
//! TLBIASID is trusted with the walk cache and only tables were).
//!
//! # What the caller must do
//!
//! - Report only what is already cleared (the walkers do: they call the sink after the
//!   descriptor write).
//! - Not map anything new at a gathered VA before the gather has flushed: the stale entry
//!   would break break-before-make. (Holding the address-space lock across the unmap and
//!   the `finish`, as Linux holds `mmap_lock`, does it.)
//! - Give the ASID that the address space's non-global entries are tagged with, and keep
//!   it assigned to this address space until the gather ends (an allocator such as
//!   [`crate::asid`] that reserves running ASIDs and flushes before reusing a number keeps
//!   this true). Use a backend that reaches every CPU that may have run it (broadcast, or
//!   IPIs).
//! - Keep one [`InFlight`] per address space and pass it to every gather on it.
//! - Finish or drop the gather; never `mem::forget` it: the frames would leak and the
//!   in-flight count would stay up (every later gather would then fall back to a whole-ASID
//!   flush: slow, never unsafe).
//!
//! Dropping an unfinished gather does what [`MmuGather::finish`] does (flush, then free,
//! then return the batch frames) and discards the report: a gather never frees before it
//! has flushed and never leaks, whichever way it ends.
//!
//! # Lockless software walkers
//!
//! The TLB flush makes a freed table unreachable for the *hardware* walkers. A kernel may
//! also walk tables in software without the page-table lock (Linux's `gup_fast`, a
//! lockless `translate` in a fault path or a profiler): such a walker reads a table entry,
//! then follows it into the next table. If the table is unlinked, flushed and freed
//! between those two reads, and its frame is reused, the walker reads whatever now lives
//! there as descriptors.
//!
//! So the gather has a sync point for them: [`MmuGather::with_table_sync`] gives it a
//! [`TableFreeSync`], whose `sync_before_table_free` it calls once per flush that is
//! about to hand back table memory, after that flush's TLB completion and before the first
//! table frame is freed. The kernel implements it with whatever tells it that every walker
//! that may have read the old parent entry has finished: an IPI round to the CPUs (the
//! walkers keep interrupts off, so a CPU that took the IPI is outside any walk: Linux's
//! `tlb_remove_table_sync_one`), a grace period (Linux's RCU table freeing), or per-CPU
//! walk epochs ([`crate::lockless::WalkEpochs`], which [`crate::locked`] wires up with a
//! lockless translate). The unlinking stores are made visible first (a full barrier just
//! before the call), so a walker starting after the sync began cannot find the table.
//!
//! Mapped pages are not synced: a software walker that wants to use the page it found must
//! pin it by other means (take a reference, then re-check the entry, as `gup_fast` does).
//! Without a hook (the default, same as [`NoTableSync`]) the gather frees table memory as
//! soon as the hardware can no longer reach it: right for kernels whose only lockless
//! walker is the MMU. [`FlushReport::table_syncs`] counts the calls.
//!
//! # ASIDs
//!
//! The ASID in the [`Scope`] is the one every flush names. When an ASID allocator (such as
//! [`crate::asid`]) may give the address space another ASID while the gather is open (an
//! address space that runs nowhere may be renumbered at a rollover and switched to again
//! on another CPU before the unmap reaches a VA), the flush must name the ASID assigned at
//! flush time: [`MmuGather::with_asid_source`] makes every flush read it from the space's
//! [`AsidContext`]. Entries under the old number need no flush: the allocator has every
//! CPU invalidate its TLB before it uses an ASID of the new generation.
//!
//! # Against Linux's ARM32 policy
//!
//! [`LinuxArm32Estimate`] counts what Linux's ARM32 `mmu_gather` issues for the same walker
//! reports (one TLBIMVA per 4 KiB of the tracked `[start, end)`, widened for freed tables,
//! one `flush_tlb_mm` per flush in full-mm mode). Measured with the short-descriptor tables
//! and the host TLB model (`model_tests::workload_table_ours_vs_linux_arm32`, which also
//! checks nothing freed stays reachable), TLB invalidate operations:
//!
//! | workload | this gather | Linux ARM32 |
//! | --- | ---: | ---: |
//! | 1 page | 1 | 1 |
//! | 16 pages | 16 | 16 |
//! | 64 MiB dense, 4 KiB pages | 1 TLBIASID (2 if the frames are scattered: one early flush) | 16,384 |
//! | 8 pages scattered in 64 MiB | 8 | 16,384 |
//! | the same + `free_tables` (`unmap_region`) | 8 | 16,384 |
//! | 16 MiB of 1 MiB sections | 16 | 4,096 |
//! | one 16 MiB supersection | 1 | 4,096 |
//! | teardown of 1 GiB of 4 KiB pages | 1 (29 if the frames are scattered) | 29 |
//!
//! The test's memory hands out physically consecutive frames, which the gather keeps as one
//! *run* (one or two batch words for any number of leaves), so its batch never fills. With
//! scattered frames every leaf takes a batch word, and a big unmap or a teardown flushes once
//! per full batch (~9,200 frames with the defaults), like Linux, and must, to free.
//!
//! # Size
//!
//! The gather lives on the caller's stack and uses no heap: [`GATHER_STATE_BYTES`] bytes
//! of its own state (the 64-entry record, the open run and the 32-word batch, the report)
//! plus the backend, the memory handle, the `&InFlight` and the optional table-sync hook
//! and ASID source. With references or zero-sized handles that is 568 bytes on `armv7a`
//! and 592 on a 64-bit host (the state is 544 on both); a compile-time check keeps it
//! under 640.
//!
//! # Example
//!
//! ```
//! use armv7_mm::gather::{InFlight, MmuGather, Scope};
//! use armv7_mm::{Asid, ClearedLeaf, MapSize, Memory, PhysAddr, TlbBackend, TlbCounters,
//!                UnmapSink, VirtAddr};
//! # use core::ptr::NonNull;
//! # #[derive(Default)] struct Counting(TlbCounters);
//! # impl TlbBackend for Counting {
//! #     fn prepare(&mut self) { self.0.prepares += 1 }
//! #     fn invalidate_va(&mut self, _: VirtAddr, _: Asid) { self.0.va += 1 }
//! #     fn invalidate_va_all_asids(&mut self, _: VirtAddr) { self.0.va_all_asids += 1 }
//! #     fn invalidate_asid(&mut self, _: Asid) { self.0.asid += 1 }
//! #     fn invalidate_all(&mut self) { self.0.all += 1 }
//! #     fn invalidate_branch_predictor(&mut self) { self.0.branch_predictor += 1 }
//! #     fn complete(&mut self) { self.0.completions += 1 }
//! #     fn counters(&self) -> TlbCounters { self.0 }
//! # }
//! # #[derive(Default)] struct Frames { freed: usize }
//! # unsafe impl Memory for Frames {
//! #     fn allocate_frames(&mut self, _: usize, _: usize) -> Option<PhysAddr> { None }
//! #     fn free_frames(&mut self, _: PhysAddr, n: usize) { self.freed += n }
//! #     fn phys_to_virt(&self, _: PhysAddr) -> NonNull<u8> { NonNull::dangling() }
//! # }
//! let in_flight = InFlight::new(); // kept next to the address space
//! let mut tlb = Counting::default();
//! let mut frames = Frames::default();
//! let mut gather = MmuGather::new(Scope::Asid(Asid(5)), &mut tlb, &mut frames, &in_flight);
//! // The walker (e.g. an unmap) reports what it cleared:
//! gather.leaf_cleared(ClearedLeaf {
//!     va: VirtAddr::new(0x0040_0000),
//!     size: MapSize::Page4K,
//!     pa: PhysAddr::new(0x8000_0000),
//!     global: false,
//!     executable: false,
//! });
//! let report = gather.finish(); // prepare, 1 TLBIMVA, complete, then free
//! assert_eq!(report.invalidates.va, 1);
//! assert_eq!(report.completions, 1);
//! assert_eq!(frames.freed, 1);
//! ```
//!
//! [`UnmapSink`]: crate::sink::UnmapSink
//! [`UnmapSink::leaf_cleared`]: crate::sink::UnmapSink::leaf_cleared
//! [`UnmapSink::table_unlinked`]: crate::sink::UnmapSink::table_unlinked
//! [`UnmapSink::table_memory_freed`]: crate::sink::UnmapSink::table_memory_freed

use core::sync::atomic::{AtomicU32, Ordering};

use crate::addr::{PhysAddr, VirtAddr};
use crate::asid::AsidContext;
use crate::memory::Memory;
use crate::tlb::{Asid, TlbBackend};
// What the walker reports, as the tests (`use super::*`) name it.
#[cfg(test)]
use crate::sink::{ClearedLeaf, UnmapSink};

mod batch;
mod flush;
#[cfg(all(test, feature = "tlb-model"))]
mod model_tests;
mod open;
#[cfg(all(test, feature = "tlb-model"))]
mod protect_tests;
mod range;
mod report;
#[cfg(test)]
mod scope_tests;
mod sink_impl;
mod table_sync;
#[cfg(test)]
mod tests;

pub use batch::{ENTRIES_PER_FRAME, LOCAL_BATCH};
pub use range::{PendingOp, MAX_PENDING};
pub use report::{
    linux_arm32_range_ops, Fallback, FlushReport, InvalidateCounts, LinuxArm32Estimate, Tee,
    LINUX_ARM32_BATCH_CAPACITY,
};
pub use table_sync::{NoTableSync, TableFreeSync};

use batch::FrameBatches;
use range::PendingInvalidates;

// The IPI backend replays a gather's flush on the other CPUs exactly (no degrading to a
// whole-ASID or whole-TLB invalidate there) only if its request holds every by-VA
// operation one flush can issue; its capacity is its own constant, in the TLB layer.
const _: () = assert!(MAX_PENDING <= crate::tlb::ipi::REQUEST_CAPACITY);

/// Which address space a gather works on, and how.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Scope {
    /// A user address space tagged with this ASID: non-global entries are invalidated by
    /// VA and ASID, the fallback is one TLBIASID.
    Asid(Asid),
    /// The kernel (global) space: every invalidate is for all ASIDs, the fallback is
    /// TLBIALL.
    Kernel,
    /// Teardown of the address space tagged with this ASID: no per-VA work, each flush is
    /// one TLBIASID.
    Teardown(Asid),
}

/// Tunables of a gather.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct GatherConfig {
    /// Most by-VA invalidates one flush issues; past it the flush falls back to one
    /// TLBIASID (TLBIALL). Clamped to [`MAX_PENDING`]. Default 64 (see the module docs).
    pub max_invalidates: usize,
    /// Most frames borrowed from the allocator for overflow batches. Default 9.
    pub max_batch_frames: usize,
    /// Whether a whole-ASID invalidate (TLBIASID) drops every walk-cache entry of the
    /// space's tables. Default `true`: the architecture says an invalidate by ASID removes
    /// the entries of that ASID from every level of lookup, and the crate's context switch
    /// ([`crate::arch::switch`]) never walks a space's tables under another ASID, so all of them
    /// carry the space's ASID (see "Fallback and the walk cache" in the module docs).
    /// `false` makes a fallback after table frees a TLBIALL, for a kernel that switches
    /// address spaces with its own code and cannot promise that.
    pub asid_flush_drops_walk_cache: bool,
}

impl GatherConfig {
    /// The defaults: 64 invalidates, 9 batch frames, TLBIASID drops the ASID's walk-cache
    /// entries.
    pub const DEFAULT: GatherConfig = GatherConfig {
        max_invalidates: 64,
        max_batch_frames: 9,
        asid_flush_drops_walk_cache: true,
    };
}

impl Default for GatherConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The count of gathers in flight on one address space.
///
/// The kernel keeps one next to each address space (not inside the page tables: gathers
/// that do not hold the page-table lock share it) and passes it to every gather it starts
/// there. See "Overlapping gathers" in the [module docs](self).
#[derive(Debug, Default)]
pub struct InFlight {
    count: AtomicU32,
    /// What any gather on this space has cleared ([`SEEN_GLOBAL`], [`SEEN_TABLES`]),
    /// published when it is recorded, so that a gather finishing while another is in
    /// flight knows what the other's entries may be. Sticky: never cleared (a reset could
    /// race with a gather that starts as the count reaches zero), which only makes later
    /// nested fallbacks use TLBIALL.
    seen: AtomicU32,
}

/// [`InFlight`]: some gather cleared a global entry.
const SEEN_GLOBAL: u8 = 1;
/// [`InFlight`]: some gather unlinked a table (walk-cache entries may exist).
const SEEN_TABLES: u8 = 2;
/// `SEEN_TABLES | SEEN_GLOBAL` (a test checks it): an unlinked table that may hold global
/// entries. Written as a value, so no mutation of the expression can arise.
const SEEN_GLOBAL_TABLES: u8 = 3;

impl InFlight {
    /// No gather in flight.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            count: AtomicU32::new(0),
            seen: AtomicU32::new(0),
        }
    }

    /// Gathers in flight right now.
    #[must_use]
    pub fn current(&self) -> u32 {
        self.count.load(Ordering::SeqCst)
    }
}

/// Bytes of a gather's own state, without the backend, the memory handle and the
/// `&InFlight` (see "Size" in the [module docs](self)).
pub const GATHER_STATE_BYTES: usize = core::mem::size_of::<GatherState>();

/// Everything but the handles.
struct GatherState {
    record: PendingInvalidates,
    batches: FrameBatches,
    report: FlushReport,
    scope: Scope,
    max_batch_frames: u16,
    asid_flush_drops_walk_cache: bool,
    global_seen: bool,
    /// The [`InFlight`] `seen` bits this gather has already published.
    published: u8,
    exec_seen: bool,
    tables_seen: bool,
    /// Table memory waits in the batches (the next drain must sync first).
    tables_pending: bool,
    finished: bool,
}

/// Collects what walkers removed, invalidates it in one flush, then frees it.
///
/// See the [module docs](self) for the protocol. `B` is the TLB backend (`&mut B` works),
/// `M` the kernel's memory handle (`&mut M` works).
#[must_use = "a gather must be finished (or dropped) to flush the TLB and free its frames"]
pub struct MmuGather<'a, B: TlbBackend, M: Memory> {
    backend: B,
    memory: M,
    in_flight: &'a InFlight,
    /// Called before table memory is handed back (lockless software walkers).
    table_sync: Option<&'a dyn TableFreeSync>,
    /// Where each flush reads the address space's ASID now (overrides the scope's).
    asid_source: Option<&'a AsidContext>,
    st: GatherState,
}

// The whole point of the design: the gather fits comfortably on a kernel stack (with
// thin references as handles, the usual way to pass them). 640 since the on-stack batch
// grew to 32 words (a scattered unmap of eight pages and their tables borrows no frame).
const _: () = assert!(core::mem::size_of::<MmuGather<'static, &mut Nothing, &mut Nothing>>() < 640);

/// A stand-in backend and memory handle for the size check above.
struct Nothing;
// SAFETY: never allocates, so `phys_to_virt` is never used on its behalf.
unsafe impl Memory for Nothing {
    fn allocate_frames(&mut self, _: usize, _: usize) -> Option<PhysAddr> {
        None
    }
    fn free_frames(&mut self, _: PhysAddr, _: usize) {}
    fn phys_to_virt(&self, _: PhysAddr) -> core::ptr::NonNull<u8> {
        core::ptr::NonNull::dangling()
    }
}
impl TlbBackend for Nothing {
    fn prepare(&mut self) {}
    fn invalidate_va(&mut self, _: VirtAddr, _: Asid) {}
    fn invalidate_va_all_asids(&mut self, _: VirtAddr) {}
    fn invalidate_asid(&mut self, _: Asid) {}
    fn invalidate_all(&mut self) {}
    fn invalidate_branch_predictor(&mut self) {}
    fn complete(&mut self) {}
    fn counters(&self) -> crate::tlb::TlbCounters {
        crate::tlb::TlbCounters::default()
    }
}

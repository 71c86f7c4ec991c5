//! What a gather did ([`FlushReport`]), and what Linux's ARM32 policy would have done for the
//! same work ([`LinuxArm32Estimate`]), so the two can be put side by side.

use core::fmt;

use crate::addr::{PhysAddr, VirtAddr, PAGE_SIZE};
use crate::sink::{ChangedLeaf, ClearedLeaf, UnmapSink};

/// Why a flush invalidated a whole ASID (or everything) instead of its recorded VAs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Fallback {
    /// More invalidates were recorded than [`super::GatherConfig::max_invalidates`].
    Threshold,
    /// The gather was started in teardown ("full mm") mode: it records no VAs.
    Teardown,
    /// Another gather on the same address space was still in flight when this one
    /// finished (see "Overlapping gathers" in the [module docs](super)).
    Nested,
}

/// Invalidate operations a gather issued, by kind.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct InvalidateCounts {
    /// By VA for the gather's ASID (TLBIMVA / TLBIMVAIS).
    pub va: u32,
    /// By VA for all ASIDs (TLBIMVAA / TLBIMVAAIS): global leaves and the kernel space.
    pub va_all_asids: u32,
    /// Whole ASID (TLBIASID / TLBIASIDIS).
    pub asid: u32,
    /// Everything (TLBIALL / TLBIALLIS).
    pub all: u32,
    /// Branch predictor (BPIALL / BPIALLIS); not a TLB invalidate, counted apart.
    pub branch_predictor: u32,
}

impl InvalidateCounts {
    /// TLB invalidate operations (every kind except the branch predictor).
    #[must_use]
    pub const fn tlb_ops(&self) -> u64 {
        self.va as u64 + self.va_all_asids as u64 + self.asid as u64 + self.all as u64
    }

    /// By-VA invalidates of either kind (one ASID, or all ASIDs).
    #[must_use]
    pub const fn by_va(&self) -> u64 {
        self.va as u64 + self.va_all_asids as u64
    }
}

/// Everything one gather did, from start to [`super::MmuGather::finish`] (over all of its
/// flushes).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct FlushReport {
    /// Leaf entries reported cleared by the walkers.
    pub leaves_cleared: u32,
    /// Tables reported unlinked.
    pub tables_unlinked: u32,
    /// Leaf entries reported with changed permissions (`protect`).
    pub leaves_changed: u32,
    /// Break-before-make flushes `protect` asked for ([`crate::UnmapSink::flush_now`]).
    pub forced_flushes: u32,
    /// Mapped ranges handed back with [`crate::Memory::release_mapped`] (one per leaf).
    pub leaves_released: u32,
    /// Bytes of mapped memory handed back.
    pub bytes_released: u64,
    /// Table-memory frames handed back with [`crate::Memory::free_frames`].
    pub table_frames_freed: u32,
    /// TLB and branch-predictor operations issued.
    pub invalidates: InvalidateCounts,
    /// "Before" barriers issued ([`crate::TlbBackend::prepare`]).
    pub prepares: u32,
    /// Completion barriers issued ([`crate::TlbBackend::complete`]); one per flush.
    pub completions: u32,
    /// Flushes that issued TLB maintenance (each is one prepare + one completion).
    pub flushes: u32,
    /// Flushes forced before `finish` because the frame batch was full.
    pub early_flushes: u32,
    /// Frames borrowed from the allocator to hold overflow batches (all returned).
    pub batch_frames_borrowed: u32,
    /// Times a batch frame was wanted but the allocator had none.
    pub batch_alloc_failures: u32,
    /// The last reason a flush fell back to a whole-ASID / full invalidate, if any did.
    pub fallback: Option<Fallback>,
    /// Calls of the [`super::TableFreeSync`] hook (one per flush that handed back table
    /// memory, when a hook is set).
    pub table_syncs: u32,
}

impl FlushReport {
    /// Whether any flush fell back to a whole-ASID or full invalidate.
    #[must_use]
    pub const fn fell_back(&self) -> bool {
        self.fallback.is_some()
    }
}

impl fmt::Display for FlushReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.invalidates;
        write!(
            f,
            "cleared {} leaves, changed {} leaves, unlinked {} tables; released {} mappings \
             ({} KiB) + {} table frames; invalidates: {} va, {} va-all-asids, {} asid, {} all, \
             {} bp; {} flushes ({} early, {} break-before-make), {} prepare, {} complete; \
             batch frames {} (alloc failures {}); table syncs {}",
            self.leaves_cleared,
            self.leaves_changed,
            self.tables_unlinked,
            self.leaves_released,
            self.bytes_released / 1024,
            self.table_frames_freed,
            i.va,
            i.va_all_asids,
            i.asid,
            i.all,
            i.branch_predictor,
            self.flushes,
            self.early_flushes,
            self.forced_flushes,
            self.prepares,
            self.completions,
            self.batch_frames_borrowed,
            self.batch_alloc_failures,
            self.table_syncs,
        )?;
        match self.fallback {
            Some(r) => write!(f, "; fallback: {r:?}"),
            None => Ok(()),
        }
    }
}

/// Entries in Linux's ARM32 page batches before `tlb_flush_mmu` must flush: the 8-entry
/// on-stack bundle plus at most 9 batch pages of 1021 entries (`MAX_GATHER_BATCH_COUNT`,
/// about 10,000 pages).
pub const LINUX_ARM32_BATCH_CAPACITY: u64 = 9_197;

/// TLB invalidates Linux's ARM32 `flush_tlb_range` issues for the tracked range
/// `[start, end)`: one TLBIMVA(IS) per 4 KiB page, mapped or not (no fallback).
#[must_use]
pub const fn linux_arm32_range_ops(start: u64, end: u64) -> u64 {
    if end <= start {
        return 0;
    }
    let first = start / PAGE_SIZE as u64;
    let last = end.div_ceil(PAGE_SIZE as u64);
    last - first
}

/// An [`UnmapSink`] that frees nothing and only counts what Linux's ARM32 `mmu_gather`
/// would issue for the same reports (feed it the same walk as the gather, e.g. through
/// [`Tee`]).
///
/// The policy modelled (Linux since the generic `mmu_gather` conversion, `arch/arm`):
/// - one range `[start, end)` grows to cover every cleared leaf;
/// - a freed page-table page widens it: with classic page tables (reported with 1 MiB
///   spans) to `[(va & !(2 MiB - 1)) + 1 MiB - 4 KiB, + 8 KiB)` (the page holds the L2
///   tables of two 1 MiB regions); with LPAE (2 MiB and 1 GiB spans) by the one page at
///   the table's first VA, as `pte_free_tlb`/`pmd_free_tlb` do; either way the page goes
///   through the same page batch as mapped pages;
/// - a flush issues one TLBIMVA per 4 KiB of the range, or one ASID flush
///   (`flush_tlb_mm`) in full-mm mode, then empties the range;
/// - a flush happens whenever [`LINUX_ARM32_BATCH_CAPACITY`] pages are batched, and at
///   the end ([`LinuxArm32Estimate::finish`]).
///
/// Branch-predictor maintenance is not counted.
#[derive(Clone, Copy, Debug, Default)]
pub struct LinuxArm32Estimate {
    full_mm: bool,
    start: u64,
    end: u64,
    batched: u64,
    ops: u64,
    flushes: u64,
}

impl LinuxArm32Estimate {
    /// An estimate for a range unmap (`full_mm == false`) or a teardown.
    #[must_use]
    pub const fn new(full_mm: bool) -> Self {
        Self {
            full_mm,
            start: u64::MAX,
            end: 0,
            batched: 0,
            ops: 0,
            flushes: 0,
        }
    }

    fn widen(&mut self, start: u64, end: u64) {
        self.start = self.start.min(start);
        self.end = self.end.max(end);
    }

    fn batch_one(&mut self) {
        self.batched += 1;
        if self.batched >= LINUX_ARM32_BATCH_CAPACITY {
            self.flush();
        }
    }

    fn flush(&mut self) {
        // Every widening ends past 0, and a flush resets `end` to 0: a range waits
        // exactly when `end` is not 0.
        let pending = self.end != 0;
        if pending || self.batched > 0 {
            self.ops += if self.full_mm {
                1
            } else {
                linux_arm32_range_ops(self.start, self.end)
            };
            self.flushes += 1;
        }
        self.start = u64::MAX;
        self.end = 0;
        self.batched = 0;
    }

    /// Ends the estimate (the final `tlb_finish_mmu` flush); returns the TLB invalidate
    /// operations Linux would have issued in total.
    pub fn finish(&mut self) -> u64 {
        self.flush();
        self.ops
    }

    /// Operations counted so far (without the final flush).
    #[must_use]
    pub const fn ops_so_far(&self) -> u64 {
        self.ops
    }

    /// Flushes counted so far.
    #[must_use]
    pub const fn flushes(&self) -> u64 {
        self.flushes
    }
}

impl UnmapSink for LinuxArm32Estimate {
    fn leaf_cleared(&mut self, leaf: ClearedLeaf) {
        let start = leaf.va.as_u64();
        self.widen(start, start + leaf.size.bytes());
        self.batch_one();
    }

    fn leaf_changed(&mut self, leaf: ChangedLeaf) {
        // `change_protection` widens the mmu_gather range per PTE; no page to batch.
        let start = leaf.va.as_u64();
        self.widen(start, start + leaf.size.bytes());
    }

    fn flush_now(&mut self) {
        // Linux ARM32 maps user memory with 4 KiB PTEs only: it never breaks a replicated
        // leaf, so there is no policy to estimate here.
    }

    fn table_unlinked(&mut self, va: VirtAddr, span: u64, _global: bool) {
        let page = PAGE_SIZE as u64;
        if span == 1 << 20 {
            // Classic tables: Linux widens per freed table page; with two 1 MiB regions
            // per page the range is the same for both halves, so widening per unlinked
            // region is equivalent.
            let base = (va.as_u64() & !((2 << 20) - 1)) + (1 << 20) - page;
            self.widen(base, base + 0x2000); // two pages
        } else {
            // LPAE: one page at the freed table's address.
            self.widen(va.as_u64(), va.as_u64() + page);
        }
    }

    fn table_memory_freed(&mut self, _pa: PhysAddr, _frames: usize) {
        self.batch_one();
    }
}

/// Forwards every report to two sinks, in order: e.g. an [`super::MmuGather`] and a
/// [`LinuxArm32Estimate`].
pub struct Tee<'a, A: ?Sized, B: ?Sized> {
    /// The first sink.
    pub first: &'a mut A,
    /// The second sink.
    pub second: &'a mut B,
}

impl<'a, A: UnmapSink + ?Sized, B: UnmapSink + ?Sized> Tee<'a, A, B> {
    /// A sink feeding `first` then `second`.
    pub fn new(first: &'a mut A, second: &'a mut B) -> Self {
        Self { first, second }
    }
}

impl<A: UnmapSink + ?Sized, B: UnmapSink + ?Sized> UnmapSink for Tee<'_, A, B> {
    fn leaf_cleared(&mut self, leaf: ClearedLeaf) {
        self.first.leaf_cleared(leaf);
        self.second.leaf_cleared(leaf);
    }
    fn table_unlinked(&mut self, va: VirtAddr, span: u64, global: bool) {
        self.first.table_unlinked(va, span, global);
        self.second.table_unlinked(va, span, global);
    }
    fn table_memory_freed(&mut self, pa: PhysAddr, frames: usize) {
        self.first.table_memory_freed(pa, frames);
        self.second.table_memory_freed(pa, frames);
    }
    fn leaf_changed(&mut self, leaf: ChangedLeaf) {
        self.first.leaf_changed(leaf);
        self.second.leaf_changed(leaf);
    }
    fn flush_now(&mut self) {
        self.first.flush_now();
        self.second.flush_now();
    }
}

#[cfg(test)]
mod estimate_tests {
    use super::*;

    #[test]
    fn freed_tables_widen_by_format() {
        // A classic 1 MiB table: the two pages around the middle of its 2 MiB pair.
        let mut short = LinuxArm32Estimate::new(false);
        short.table_unlinked(VirtAddr::new(0x0030_0000), 1 << 20, false);
        assert_eq!(short.finish(), 2);
        // LPAE 2 MiB and 1 GiB tables: one page each, at the table's VA.
        let mut lpae = LinuxArm32Estimate::new(false);
        lpae.table_unlinked(VirtAddr::new(0x4020_0000), 2 << 20, false);
        assert_eq!(lpae.finish(), 1);
        let mut lpae = LinuxArm32Estimate::new(false);
        lpae.table_unlinked(VirtAddr::new(0x4020_0000), 2 << 20, false);
        lpae.table_unlinked(VirtAddr::new(0x4000_0000), 1 << 30, false);
        assert_eq!(lpae.finish(), (0x20_0000 / 4096) + 1);
    }
}

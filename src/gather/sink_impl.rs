//! What the walker reports: the gather as the [`UnmapSink`] of unmap, protect and
//! `free_tables` (a leaf cleared or changed, a table unlinked, table memory freed, a flush
//! asked for), each turned into pending invalidates and batched frames, and published in
//! the [`InFlight`](super::InFlight) for overlapping gathers.

use core::sync::atomic::Ordering;

use super::batch::Pending;
use super::{MmuGather, PendingOp, Scope, SEEN_GLOBAL, SEEN_GLOBAL_TABLES, SEEN_TABLES};
use crate::addr::{PhysAddr, VirtAddr};
use crate::memory::Memory;
use crate::sink::{ChangedLeaf, ClearedLeaf, UnmapSink};
use crate::tlb::TlbBackend;

impl<B: TlbBackend, M: Memory> MmuGather<'_, B, M> {
    /// Publishes `bits` in the [`InFlight`] (once per gather and kind). `published` only
    /// saves repeated atomics: `fetch_or` is idempotent, so publishing again (the mutant
    /// `|=` -> `&=`, listed in `mutants-equivalent.md`) changes no observable state.
    #[cold]
    fn publish(&mut self, bits: u8) {
        if self.st.published & bits != bits {
            self.st.published |= bits;
            self.in_flight
                .seen
                .fetch_or(u32::from(bits), Ordering::SeqCst);
        }
    }

    /// The invalidate a cleared or changed leaf owes: published for overlapping gathers if
    /// global (tested here so that the common case, published already, makes no call),
    /// noted for the fallback and branch-predictor rules, and recorded by VA (one
    /// invalidate per leaf: a TLB entry of a large page or section is found by any VA in it).
    #[inline(always)]
    fn record_leaf(&mut self, va: VirtAddr, global: bool, executable: bool) {
        if global && self.st.published & SEEN_GLOBAL == 0 {
            self.publish(SEEN_GLOBAL);
        }
        let all = global || self.all_asids();
        let st = &mut self.st;
        st.global_seen |= global;
        st.exec_seen |= executable;
        st.record.push(if all {
            PendingOp::VaAllAsids(va)
        } else {
            PendingOp::Va(va)
        });
    }

    /// Whether this gather's flushes use all-ASID operations.
    fn all_asids(&self) -> bool {
        matches!(self.st.scope, Scope::Kernel)
    }
}

impl<B: TlbBackend, M: Memory> UnmapSink for MmuGather<'_, B, M> {
    #[inline(always)]
    fn leaf_cleared(&mut self, leaf: ClearedLeaf) {
        self.st.report.leaves_cleared += 1;
        self.record_leaf(leaf.va, leaf.global, leaf.executable);
        // The common case (the frame follows the previous leaf's) in a few instructions;
        // anything else takes the general path.
        if !self.st.batches.extend_run(leaf.va, leaf.pa, leaf.size) {
            self.batch(Pending::leaf(leaf.va, leaf.pa, leaf.size));
        }
    }

    fn table_unlinked(&mut self, va: VirtAddr, span: u64, global: bool) {
        self.publish(if global {
            SEEN_GLOBAL_TABLES
        } else {
            SEEN_TABLES
        });
        let all_asids = self.all_asids();
        let st = &mut self.st;
        st.report.tables_unlinked += 1;
        st.global_seen |= global;
        st.tables_seen = true;
        // A table of an ASID space is invalidated by VA and that ASID: the context switch
        // parks TTBR0 while the ASID changes (`crate::arch::switch`), so every walk-cache entry
        // for this space's tables is tagged with its ASID. A table that may hold global
        // entries, or any table of the kernel space, is invalidated for all ASIDs. A
        // pending leaf invalidate in the span does the job (one by-VA operation drops the
        // walk-cache entries for that VA), so freeing tables after a sparse unmap adds
        // nothing.
        // (A kernel that does not trust its own switch, `asid_flush_drops_walk_cache` off,
        // gets all-ASID table invalidates too.)
        if global || all_asids || !st.asid_flush_drops_walk_cache {
            if !st.record.cover_span_all_asids(va, span) {
                st.record.push(PendingOp::VaAllAsids(va));
            }
        } else if !st.record.covers_span(va, span) {
            st.record.push(PendingOp::Va(va));
        }
    }

    fn table_memory_freed(&mut self, pa: PhysAddr, frames: usize) {
        if frames == 0 {
            return;
        }
        self.batch(Pending::Table { pa, frames });
    }

    #[inline]
    fn leaf_changed(&mut self, leaf: ChangedLeaf) {
        // Invalidated exactly like a cleared leaf (same threshold, same all-ASID rule, same
        // branch-predictor rule); the frames stay mapped, so nothing joins the batch.
        self.st.report.leaves_changed += 1;
        self.record_leaf(leaf.va, leaf.global, leaf.executable);
    }

    fn flush_now(&mut self) {
        self.st.report.forced_flushes += 1;
        self.flush();
    }
}

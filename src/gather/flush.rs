//! The flush: what a finished, dropped or early-flushed gather issues to the TLB backend
//! (the by-VA operations it recorded, or the fallback to one TLBIASID / TLBIALL, and the
//! branch predictor), then the table-free sync and the freeing of what was batched; and
//! batching a frame, which flushes early when no batch has room.

use core::sync::atomic::Ordering;

use super::batch::Pending;
use super::{Fallback, FlushReport, MmuGather, PendingOp, Scope, SEEN_GLOBAL, SEEN_TABLES};
use crate::memory::Memory;
use crate::tlb::{Asid, TlbBackend};

impl<B: TlbBackend, M: Memory> MmuGather<'_, B, M> {
    /// Flushes now: invalidates what was recorded, then frees what was batched. The gather
    /// stays usable (e.g. before dropping a lock for long).
    pub fn flush(&mut self) {
        self.flush_inner(None);
    }

    /// Flushes (the whole ASID if another gather on this address space is still in
    /// flight), frees everything, returns the batch frames, and reports what was done.
    // Always inlined: a call would first copy the whole gather (about 570 bytes, some 900
    // instructions on ARMv7) into the by-value argument.
    #[inline(always)]
    pub fn finish(mut self) -> FlushReport {
        self.finish_inner();
        self.st.report
    }

    fn finish_inner(&mut self) {
        if self.st.finished {
            return;
        }
        // Marked first: if a kernel callback (backend or `Memory`) panics and unwinds below,
        // `Drop` must not run this again and free what was already freed. A panic here
        // leaks the rest (and leaves the in-flight count up, which only makes later gathers
        // fall back to whole-ASID flushes); it never frees twice or early.
        self.st.finished = true;
        let nested = self.in_flight.count.load(Ordering::SeqCst) > 1;
        self.flush_inner(if nested { Some(Fallback::Nested) } else { None });
        self.st.batches.return_frames(&mut self.memory);
        self.in_flight.count.fetch_sub(1, Ordering::SeqCst);
    }
    /// One flush. `forced` makes it invalidate the whole ASID (everything) even with
    /// nothing recorded.
    fn flush_inner(&mut self, forced: Option<Fallback>) {
        let scope = self.current_scope();
        let st = &mut self.st;
        let fallback = forced.or(if st.record.overflowed() {
            Some(match scope {
                Scope::Teardown(_) => Fallback::Teardown,
                _ => Fallback::Threshold,
            })
        } else {
            None
        });
        if fallback.is_some() || !st.record.is_empty() {
            self.backend.prepare();
            st.report.prepares += 1;
            let inv = &mut st.report.invalidates;
            match (fallback, scope) {
                (Some(_), Scope::Kernel) => {
                    self.backend.invalidate_all();
                    inv.all += 1;
                }
                (Some(f), Scope::Asid(asid) | Scope::Teardown(asid)) => {
                    // A nested fallback stands in for the other gathers' records too: what
                    // they cleared (published in the InFlight) counts as well as our own.
                    let others = if f == Fallback::Nested {
                        self.in_flight.seen.load(Ordering::SeqCst)
                    } else {
                        0
                    };
                    let global = st.global_seen || others & u32::from(SEEN_GLOBAL) != 0;
                    let tables = st.tables_seen || others & u32::from(SEEN_TABLES) != 0;
                    let walk_cache_at_risk = tables && !st.asid_flush_drops_walk_cache;
                    if global || walk_cache_at_risk {
                        self.backend.invalidate_all();
                        inv.all += 1;
                    } else {
                        self.backend.invalidate_asid(asid);
                        inv.asid += 1;
                    }
                }
                (None, scope) => {
                    let asid = match scope {
                        Scope::Asid(a) | Scope::Teardown(a) => a,
                        Scope::Kernel => Asid(0),
                    };
                    for op in st.record.iter() {
                        match op {
                            PendingOp::Va(va) => {
                                self.backend.invalidate_va(va, asid);
                                inv.va += 1;
                            }
                            PendingOp::VaAllAsids(va) => {
                                self.backend.invalidate_va_all_asids(va);
                                inv.va_all_asids += 1;
                            }
                        }
                    }
                }
            }
            if st.exec_seen {
                self.backend.invalidate_branch_predictor();
                inv.branch_predictor += 1;
            }
            self.backend.complete();
            st.report.completions += 1;
            st.report.flushes += 1;
            if fallback.is_some() {
                st.report.fallback = fallback;
            }
        }
        // Everything batched is covered by a completed flush: this one, or (for frames
        // batched after an early flush with nothing recorded since) the one before.
        // Lockless software walkers are waited for after that completion and before any
        // table memory goes back.
        if st.tables_pending {
            if let Some(sync) = self.table_sync {
                // The unlinking stores must be visible before the sync looks for walkers
                // (the completion above is a full barrier, but a drain may run without one).
                core::sync::atomic::fence(Ordering::SeqCst);
                sync.sync_before_table_free();
                st.report.table_syncs += 1;
            }
            st.tables_pending = false;
        }
        st.batches.drain(&mut self.memory, &mut st.report);
        st.record.clear();
        st.global_seen = false;
        st.exec_seen = false;
        st.tables_seen = false;
    }

    /// Batches `item` for freeing after the flush, flushing early if there is no room.
    pub(super) fn batch(&mut self, item: Pending) {
        if matches!(item, Pending::Table { .. }) {
            // The next drain syncs with lockless walkers before anything goes back; if this
            // item triggers a flush below, that one syncs for it before it is freed.
            self.st.tables_pending = true;
        }
        if !item.packable() {
            // Cannot be packed (PA past 2^40, misaligned): flush now, which covers this
            // item's invalidate (recorded before we got here), and free it directly.
            self.flush_inner(None);
            item.release(&mut self.memory, &mut self.st.report);
            return;
        }
        let max = self.st.max_batch_frames as usize;
        if self
            .st
            .batches
            .push(item, &mut self.memory, max, &mut self.st.report)
            .is_ok()
        {
            return;
        }
        // No room and no batch frame: flush what we have (this item's invalidate is
        // already recorded, so it is covered too), then batch it into the emptied batch.
        // If the item is table memory, that flush already synced for it (it was unlinked
        // before the sync, so no walker starting later can reach it).
        self.st.report.early_flushes += 1;
        self.flush_inner(None);
        let pushed = self
            .st
            .batches
            .push(item, &mut self.memory, max, &mut self.st.report);
        debug_assert!(pushed.is_ok(), "an emptied batch always has room");
        if pushed.is_err() {
            // Unreachable (the batches are empty after a flush), but never drop a frame.
            item.release(&mut self.memory, &mut self.st.report);
        }
    }
}

impl<B: TlbBackend, M: Memory> Drop for MmuGather<'_, B, M> {
    /// An unfinished gather finishes here: flush, then free, then return the batch frames.
    fn drop(&mut self) {
        self.finish_inner();
    }
}

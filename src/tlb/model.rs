//! Host TLB model (feature `tlb-model`): a software TLB that caches translations the way
//! hardware may, keeps serving them after the tables change until an invalidate that covers
//! them *completes*, and reports a freed frame that a cached translation still reaches.
//!
//! [`TlbModel`] implements [`TlbBackend`], so the code under test (a gather, a kernel's
//! unmap path) drives it exactly as it drives the hardware backend; the test plays the CPU
//! with [`TlbModel::access`] and asks [`TlbModel::check_freed`] whenever memory goes back to
//! the allocator ([`FreeChecker`] does that for every free of a [`Memory`]).
//!
//! # What it caches (adversarially)
//!
//! Every successful [`TlbModel::access`] caches
//! - the **leaf** it used, tagged with the ASID of the access; a global leaf (nG clear)
//!   then matches every ASID;
//! - a **walk-cache entry** for every table the walk went through ([`Walk::tables`]),
//!   tagged with the ASID of the access (ARMv7 walk caches may be ASID-tagged, Cortex-A15's
//!   are); it is used for later accesses of the same ASID to any VA in the table's span.
//!
//! Nothing is ever evicted: an entry stays until an invalidate that covers it completes.
//! A leaf loaded next to a cached entry that overlaps it and says something else (output,
//! size or attributes) is a **TLB conflict**, recorded in [`TlbModel::conflicts`]: what a
//! change made without break-before-make leads to. [`TlbModel::access_in_flight`] models
//! several walks in flight (each reading whatever copy of a replicated leaf its VA indexes,
//! none seeing the others' fills), the case QEMU never shows.
//! A TLB hit returns the cached leaf without looking at the tables; a walk-cache hit
//! continues the walk from the cached table's *current* memory
//! ([`WalkSource::walk_from`]), even if that table was unlinked, freed or reused; otherwise
//! the model walks from the root. Faults are not cached (the architecture forbids it).
//!
//! # What an invalidate drops
//!
//! | operation | leaf entries | walk-cache entries |
//! | --- | --- | --- |
//! | `invalidate_va(va, asid)` | covering `va`, of `asid` or global | spanning `va`, of `asid` |
//! | `invalidate_va_all_asids(va)` | covering `va` | spanning `va` |
//! | `invalidate_asid(asid)` | non-global of `asid` | of `asid` |
//! | `invalidate_all` | all | all |
//!
//! The architecture lets by-VA operations match walk-cache entries only of the given ASID,
//! so the model does exactly that; an invalidate by ASID removes that ASID's entries from
//! every level of lookup (walk-cache entries included: the Armv8 AArch32 TLBIASID
//! definition, which restates ARMv7's, and the Cortex-A15 TRM's ASID-tagged walk cache).
//! What the model cannot know is *which* ASID an entry was walked under on its own: the
//! tests decide it through [`TlbModel::access`], or the CPU model
//! ([`super::cpu_model`]) decides it by running the crate's context-switch programs with
//! speculative walks between instructions.
//!
//! # Batches
//!
//! An invalidate counts only if it was issued after `prepare` and a `complete` followed:
//! until then it is *pending* and every entry it covers is still served and still reported
//! by [`TlbModel::check_freed`] (with `awaiting_completion` set). An invalidate issued with
//! no batch open is never applied (the walker might refill from tables it did not yet see)
//! and is reported by [`TlbModel::check_protocol`].
//!
//! Limitations: the model cannot see *when* tables were written, so it cannot catch a table
//! write made after `prepare` but before the invalidate it relies on; it models one CPU's
//! TLB (the inner-shareable backend's broadcast is taken as given).
//!
//! [`Memory`]: crate::memory::Memory

use std::vec::Vec;

use super::{Asid, TlbBackend, TlbCounters};
use crate::addr::{PhysAddr, VirtAddr, PAGE_SIZE};
// What the tests (`use super::*`) name besides the model's own items.
#[cfg(test)]
use crate::{memory::Memory, sink::MapSize};
#[cfg(test)]
use core::ptr::NonNull;

mod check;
mod entry;
mod shared;
mod walk;

pub use check::{CachedEntry, Conflict, ProtocolError, StaleTranslation};
pub use entry::{Invalidate, LeafEntry, TableEntry, Translation, Via};
pub use shared::{FreeChecker, SharedTlbModel};
pub use walk::{Walk, WalkLeaf, WalkSource, WalkTable};

/// What the model has seen, besides the [`TlbCounters`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct ModelStats {
    /// Accesses answered by a cached leaf.
    pub tlb_hits: u64,
    /// Accesses that continued a walk from a walk-cache entry.
    pub walk_cache_hits: u64,
    /// Accesses that walked from the root.
    pub walks: u64,
    /// Accesses that ended in a translation fault.
    pub faults: u64,
    /// Walks started together by [`TlbModel::access_in_flight`].
    pub walks_in_flight: u64,
}

/// The software TLB. See the module documentation.
#[derive(Debug, Default)]
pub struct TlbModel {
    leaves: Vec<LeafEntry>,
    tables: Vec<TableEntry>,
    /// `Some` while a batch is open (after `prepare`, until `complete`).
    batch: Option<Vec<Invalidate>>,
    unprepared: Vec<Invalidate>,
    conflicts: Vec<Conflict>,
    counters: TlbCounters,
    stats: ModelStats,
}

impl TlbModel {
    /// An empty TLB.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// An access by `asid` to `va`, as the CPU makes it: the translation it uses (`None`
    /// for a translation fault), caching whatever the walk loaded.
    pub fn access<W: WalkSource + ?Sized>(
        &mut self,
        va: VirtAddr,
        asid: Asid,
        source: &W,
    ) -> Option<Translation> {
        if let Some(e) = self.leaf_hit(va, asid) {
            self.stats.tlb_hits += 1;
            return Some(Translation::new(e.leaf, va, Via::Tlb));
        }
        let (walk, via) = self.walk(va, asid, source);
        match via {
            Via::WalkCache => self.stats.walk_cache_hits += 1,
            _ => self.stats.walks += 1,
        }
        for table in walk.tables.iter().flatten() {
            let entry = TableEntry {
                table: *table,
                asid,
            };
            if !self.tables.contains(&entry) {
                self.tables.push(entry);
            }
        }
        let Some(leaf) = walk.leaf else {
            self.stats.faults += 1;
            return None;
        };
        self.fill(LeafEntry { leaf, asid });
        Some(Translation::new(leaf, va, via))
    }

    /// Caches `entry` unless it is cached already, recording a [`Conflict`] with every
    /// cached entry it conflicts with.
    fn fill(&mut self, entry: LeafEntry) {
        let leaf = entry.leaf;
        let known = self
            .leaves
            .iter()
            .any(|e| e.leaf == leaf && (leaf.global || e.asid == entry.asid));
        if known {
            return;
        }
        for e in &self.leaves {
            if Conflict::between(e, &entry) {
                self.conflicts.push(Conflict {
                    cached: *e,
                    loaded: entry,
                });
            }
        }
        self.leaves.push(entry);
    }

    /// Several walks in flight at once, as a core that walks for several misses (or
    /// speculates down several paths, Cortex-A15) does: every VA of `vas` is walked from
    /// the tables as they are *now*, none of them looking at the TLB or at the others'
    /// results, and each leaf found is then cached (a TLB may keep a large page or a
    /// supersection as fragments, so a walk that reads another copy of a replicated leaf
    /// can fill next to an entry loaded from an earlier copy). Walk-cache entries are
    /// not used or filled. Whatever conflicts with a cached entry (or with another of
    /// these walks) is recorded in [`TlbModel::conflicts`]. Returns the leaves found, in
    /// the order of `vas` (`None` for a fault).
    pub fn access_in_flight<W: WalkSource + ?Sized>(
        &mut self,
        vas: &[VirtAddr],
        asid: Asid,
        source: &W,
    ) -> Vec<Option<WalkLeaf>> {
        let found: Vec<Option<WalkLeaf>> = vas.iter().map(|&va| source.walk(va).leaf).collect();
        self.stats.walks_in_flight += vas.len() as u64;
        for leaf in found.iter().flatten() {
            self.fill(LeafEntry { leaf: *leaf, asid });
        }
        found
    }

    /// Every TLB conflict seen so far (see [`Conflict`]), in the order found.
    #[must_use]
    pub fn conflicts(&self) -> &[Conflict] {
        &self.conflicts
    }

    /// What an access by `asid` to `va` would use now, without caching anything.
    #[must_use]
    pub fn translate<W: WalkSource + ?Sized>(
        &self,
        va: VirtAddr,
        asid: Asid,
        source: &W,
    ) -> Option<Translation> {
        if let Some(e) = self.leaf_hit(va, asid) {
            return Some(Translation::new(e.leaf, va, Via::Tlb));
        }
        let (walk, via) = self.walk(va, asid, source);
        walk.leaf.map(|leaf| Translation::new(leaf, va, via))
    }

    /// The oldest cached leaf an access by `asid` to `va` hits.
    fn leaf_hit(&self, va: VirtAddr, asid: Asid) -> Option<LeafEntry> {
        self.leaves.iter().copied().find(|e| e.hits(va, asid))
    }

    /// A walk for `va`: from the deepest matching walk-cache entry (the oldest of that
    /// level), else from the root.
    fn walk<W: WalkSource + ?Sized>(&self, va: VirtAddr, asid: Asid, source: &W) -> (Walk, Via) {
        let mut best: Option<&TableEntry> = None;
        for e in self.tables.iter().filter(|e| e.hits(va, asid)) {
            if best.is_none_or(|b| e.table.level > b.table.level) {
                best = Some(e);
            }
        }
        match best {
            Some(e) => (
                source.walk_from(e.table.level, e.table.table, va),
                Via::WalkCache,
            ),
            None => (source.walk(va), Via::Walk),
        }
    }

    /// Checks that nothing cached reaches `[pa, pa + frames * 4 KiB)`, which is about to be
    /// (or was just) handed back to the allocator: no leaf whose physical range overlaps
    /// it, no walk-cache entry whose table lies in it. Entries whose invalidate is still
    /// pending count as cached.
    ///
    /// # Errors
    /// The oldest such entry, as a [`StaleTranslation`].
    pub fn check_freed(&self, pa: PhysAddr, frames: usize) -> Result<(), StaleTranslation> {
        match self.stale_entries(pa, frames).next() {
            Some(stale) => Err(stale),
            None => Ok(()),
        }
    }

    /// Every cached entry that reaches `[pa, pa + frames * 4 KiB)` (see
    /// [`TlbModel::check_freed`]).
    pub fn stale_entries(
        &self,
        pa: PhysAddr,
        frames: usize,
    ) -> impl Iterator<Item = StaleTranslation> + '_ {
        let bytes = frames as u64 * u64::from(PAGE_SIZE);
        let (start, end) = (pa.as_u64(), pa.as_u64() + bytes);
        let pending = self.batch.as_deref().unwrap_or(&[]);
        let leaves = self
            .leaves
            .iter()
            .filter(move |e| e.leaf.overlaps(pa, bytes))
            .map(move |e| StaleTranslation {
                entry: CachedEntry::Leaf(*e),
                freed: (pa, frames),
                awaiting_completion: pending.iter().any(|i| i.drops_leaf(e)),
            });
        let tables = self
            .tables
            .iter()
            .filter(move |e| (start..end).contains(&e.table.table.as_u64()))
            .map(move |e| StaleTranslation {
                entry: CachedEntry::Table(*e),
                freed: (pa, frames),
                awaiting_completion: pending.iter().any(|i| i.drops_table(e)),
            });
        leaves.chain(tables)
    }

    /// Checks that every invalidate so far was issued inside a batch and that no batch is
    /// left open with invalidates pending.
    ///
    /// # Errors
    /// The first violation found, as a [`ProtocolError`].
    pub fn check_protocol(&self) -> Result<(), ProtocolError> {
        if let Some(&first) = self.unprepared.first() {
            return Err(ProtocolError::Unprepared {
                count: self.unprepared.len(),
                first,
            });
        }
        match &self.batch {
            Some(pending) if !pending.is_empty() => Err(ProtocolError::NotCompleted {
                pending: pending.len(),
            }),
            _ => Ok(()),
        }
    }

    /// Cached leaf entries, oldest first.
    #[must_use]
    pub fn leaves(&self) -> &[LeafEntry] {
        &self.leaves
    }

    /// Cached walk-cache entries, oldest first.
    #[must_use]
    pub fn tables(&self) -> &[TableEntry] {
        &self.tables
    }

    /// Invalidates issued in the open batch, not yet completed.
    #[must_use]
    pub fn pending(&self) -> &[Invalidate] {
        self.batch.as_deref().unwrap_or(&[])
    }

    /// Invalidates issued outside any batch (never applied).
    #[must_use]
    pub fn unprepared(&self) -> &[Invalidate] {
        &self.unprepared
    }

    /// Access statistics.
    #[must_use]
    pub fn stats(&self) -> ModelStats {
        self.stats
    }

    fn issue(&mut self, op: Invalidate) {
        match &mut self.batch {
            Some(pending) => pending.push(op),
            None => self.unprepared.push(op),
        }
    }
}

impl TlbBackend for TlbModel {
    fn prepare(&mut self) {
        self.counters.prepares += 1;
        self.batch.get_or_insert_with(Vec::new);
    }

    fn invalidate_va(&mut self, va: VirtAddr, asid: Asid) {
        self.counters.va += 1;
        self.issue(Invalidate::Va(va, asid));
    }

    fn invalidate_va_all_asids(&mut self, va: VirtAddr) {
        self.counters.va_all_asids += 1;
        self.issue(Invalidate::VaAllAsids(va));
    }

    fn invalidate_asid(&mut self, asid: Asid) {
        self.counters.asid += 1;
        self.issue(Invalidate::Asid(asid));
    }

    fn invalidate_all(&mut self) {
        self.counters.all += 1;
        self.issue(Invalidate::All);
    }

    fn invalidate_branch_predictor(&mut self) {
        self.counters.branch_predictor += 1;
    }

    fn complete(&mut self) {
        self.counters.completions += 1;
        let pending = self.batch.take().unwrap_or_default();
        self.leaves
            .retain(|e| !pending.iter().any(|op| op.drops_leaf(e)));
        self.tables
            .retain(|e| !pending.iter().any(|op| op.drops_table(e)));
    }

    fn counters(&self) -> TlbCounters {
        self.counters
    }
}

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;

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

use core::cell::{Ref, RefCell, RefMut};
use core::fmt;
use core::ptr::NonNull;
use std::rc::Rc;
use std::vec::Vec;

use super::{Asid, TlbBackend, TlbCounters};
use crate::addr::{PhysAddr, VirtAddr, PAGE_SIZE};
use crate::memory::{MappedRun, Memory};
use crate::sink::MapSize;
use crate::table::attrs::Attributes;

/// One leaf translation as a walk found it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct WalkLeaf {
    /// First VA of the mapping (aligned to `size`).
    pub va: VirtAddr,
    /// Mapping size.
    pub size: MapSize,
    /// First PA of the mapping.
    pub pa: PhysAddr,
    /// Global (nG clear): the entry matches every ASID.
    pub global: bool,
    /// Everything else the entry says (permissions, memory type, ...): two cached
    /// entries for one VA that differ here (or in output or size) conflict.
    pub attrs: Attributes,
}

/// A next-level table that a walk went through: what a walk cache may keep.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct WalkTable {
    /// Level of the entry that pointed at the table (1 for a short-descriptor L1 entry).
    pub level: u8,
    /// First VA translated through this table.
    pub span_va: VirtAddr,
    /// Bytes of VA the table translates (1 MiB for a short-descriptor L2 table).
    pub span: u64,
    /// Physical address of the table itself.
    pub table: PhysAddr,
}

/// The result of one table walk.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Walk {
    /// Tables walked through, outermost first (at most two: LPAE L2 and L3 tables).
    pub tables: [Option<WalkTable>; 2],
    /// The leaf found, or `None` for a translation fault.
    pub leaf: Option<WalkLeaf>,
}

/// What the model needs from a page-table implementation: walks that read table memory
/// *now*, the way the hardware walker does.
pub trait WalkSource {
    /// Walks from the root for `va`.
    fn walk(&self, va: VirtAddr) -> Walk;
    /// Continues a walk for `va` from the table at `table` (entered from an entry at
    /// `level`): what a walk-cache hit does. The table memory may have been freed and
    /// reused; the implementation must read whatever is there now.
    fn walk_from(&self, level: u8, table: PhysAddr, va: VirtAddr) -> Walk;
}

impl WalkLeaf {
    /// Whether the mapping covers `va`.
    #[must_use]
    pub fn covers(&self, va: VirtAddr) -> bool {
        let start = self.va.as_u64();
        (start..start + self.size.bytes()).contains(&va.as_u64())
    }

    /// Whether the mapped physical range overlaps `[pa, pa + bytes)`.
    #[must_use]
    pub fn overlaps(&self, pa: PhysAddr, bytes: u64) -> bool {
        let (a, b) = (self.pa.as_u64(), self.pa.as_u64() + self.size.bytes());
        a < pa.as_u64() + bytes && pa.as_u64() < b
    }
}

impl WalkTable {
    /// Whether the table translates `va`.
    #[must_use]
    pub fn spans(&self, va: VirtAddr) -> bool {
        let start = self.span_va.as_u64();
        (start..start + self.span).contains(&va.as_u64())
    }
}

/// A cached leaf translation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct LeafEntry {
    /// The translation as the walk found it.
    pub leaf: WalkLeaf,
    /// ASID of the access that loaded it (irrelevant when `leaf.global`).
    pub asid: Asid,
}

impl LeafEntry {
    /// Whether an access by `asid` to `va` hits this entry.
    #[must_use]
    pub fn hits(&self, va: VirtAddr, asid: Asid) -> bool {
        self.leaf.covers(va) && (self.leaf.global || self.asid == asid)
    }
}

/// A cached walk-cache entry: the pointer to a next-level table.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TableEntry {
    /// The table the walk went through.
    pub table: WalkTable,
    /// ASID of the access that loaded it.
    pub asid: Asid,
}

impl TableEntry {
    /// Whether an access by `asid` to `va` may continue its walk from this entry.
    #[must_use]
    pub fn hits(&self, va: VirtAddr, asid: Asid) -> bool {
        self.table.spans(va) && self.asid == asid
    }
}

/// One invalidate request, as issued to the model.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Invalidate {
    /// `invalidate_va(va, asid)`.
    Va(VirtAddr, Asid),
    /// `invalidate_va_all_asids(va)`.
    VaAllAsids(VirtAddr),
    /// `invalidate_asid(asid)`.
    Asid(Asid),
    /// `invalidate_all()`.
    All,
}

impl Invalidate {
    /// Whether this invalidate drops the leaf entry (see the module documentation).
    #[must_use]
    pub fn drops_leaf(&self, e: &LeafEntry) -> bool {
        match *self {
            Invalidate::Va(va, asid) => e.leaf.covers(va) && (e.leaf.global || e.asid == asid),
            Invalidate::VaAllAsids(va) => e.leaf.covers(va),
            Invalidate::Asid(asid) => !e.leaf.global && e.asid == asid,
            Invalidate::All => true,
        }
    }

    /// Whether this invalidate drops the walk-cache entry (see the module documentation).
    #[must_use]
    pub fn drops_table(&self, e: &TableEntry) -> bool {
        match *self {
            Invalidate::Va(va, asid) => e.table.spans(va) && e.asid == asid,
            Invalidate::VaAllAsids(va) => e.table.spans(va),
            Invalidate::Asid(asid) => e.asid == asid,
            Invalidate::All => true,
        }
    }
}

/// Where a translation came from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Via {
    /// A cached leaf (the tables were not read).
    Tlb,
    /// A walk continued from a cached table pointer.
    WalkCache,
    /// A walk from the root.
    Walk,
}

/// The answer to an access.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Translation {
    /// The physical address `va` translates to.
    pub pa: PhysAddr,
    /// The leaf used.
    pub leaf: WalkLeaf,
    /// Where it came from.
    pub via: Via,
}

impl Translation {
    fn new(leaf: WalkLeaf, va: VirtAddr, via: Via) -> Self {
        let offset = va.as_u64() - leaf.va.as_u64();
        Self {
            pa: PhysAddr::new(leaf.pa.as_u64() + offset),
            leaf,
            via,
        }
    }
}

/// A cached entry that still reaches memory being freed: the bug class this crate exists
/// to prevent.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct StaleTranslation {
    /// The entry.
    pub entry: CachedEntry,
    /// The freed range: first address and number of 4 KiB frames.
    pub freed: (PhysAddr, usize),
    /// An invalidate that drops the entry was issued but its batch has not completed
    /// (freed before `complete`).
    pub awaiting_completion: bool,
}

/// A cached entry of either kind.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CachedEntry {
    /// A leaf translation whose physical range overlaps the freed memory.
    Leaf(LeafEntry),
    /// A walk-cache entry whose table lies in the freed memory.
    Table(TableEntry),
}

impl fmt::Display for StaleTranslation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (pa, frames) = self.freed;
        let end = pa.as_u64() + frames as u64 * u64::from(PAGE_SIZE);
        match self.entry {
            CachedEntry::Leaf(e) => {
                write!(f, "stale TLB entry: VA {} ({:?}, ", e.leaf.va, e.leaf.size)?;
                if e.leaf.global {
                    f.write_str("global")?;
                } else {
                    write!(f, "ASID {}", e.asid.0)?;
                }
                write!(f, ") -> PA {}", e.leaf.pa)?;
            }
            CachedEntry::Table(e) => write!(
                f,
                "stale walk-cache entry: table at PA {} (level {} entry, VA {} + {:#x}, ASID {})",
                e.table.table, e.table.level, e.table.span_va, e.table.span, e.asid.0
            )?,
        }
        write!(f, " still reachable while freeing [{pa}, {end:#x})")?;
        if self.awaiting_completion {
            f.write_str(" (its invalidate was issued but the batch was not completed)")?;
        }
        Ok(())
    }
}

impl std::error::Error for StaleTranslation {}

/// Two cached leaf entries that an access could both hit and that say different things
/// (output address at that VA, size or attributes): what the architecture calls a TLB
/// conflict (Arm ARM B3.10.1, a TLB conflict abort or UNPREDICTABLE). It arises when a
/// live translation is changed without break-before-make: a replicated leaf rewritten copy
/// by copy, a block replaced by a table of smaller leaves (or back) with the old entry
/// still cached.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Conflict {
    /// The entry already cached.
    pub cached: LeafEntry,
    /// The entry a later walk loaded next to it.
    pub loaded: LeafEntry,
}

impl Conflict {
    /// Whether the two entries conflict: they overlap, some access (an ASID or global)
    /// hits both, and they differ.
    #[must_use]
    pub fn between(a: &LeafEntry, b: &LeafEntry) -> bool {
        let (a0, a1) = (a.leaf.va.as_u64(), a.leaf.va.as_u64() + a.leaf.size.bytes());
        let (b0, b1) = (b.leaf.va.as_u64(), b.leaf.va.as_u64() + b.leaf.size.bytes());
        let overlap = a0 < b1 && b0 < a1;
        let same_asid = a.leaf.global || b.leaf.global || a.asid == b.asid;
        // The output of each at the VA where the other starts (or it starts).
        let at = a0.max(b0);
        let pa_a = a.leaf.pa.as_u64() + (at - a0);
        let pa_b = b.leaf.pa.as_u64() + (at - b0);
        let differ = pa_a != pa_b
            || a.leaf.size != b.leaf.size
            || a.leaf.attrs != b.leaf.attrs
            || a.leaf.global != b.leaf.global;
        overlap && same_asid && differ
    }
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, b) = (&self.cached.leaf, &self.loaded.leaf);
        write!(
            f,
            "TLB conflict: cached VA {} ({:?}) -> PA {} {:?}, loaded VA {} ({:?}) -> PA {} {:?}",
            a.va, a.size, a.pa, a.attrs, b.va, b.size, b.pa, b.attrs
        )
    }
}

/// The backend protocol was not followed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ProtocolError {
    /// Invalidates were issued with no batch open (before `prepare`, or after `complete`);
    /// they were not applied.
    Unprepared {
        /// How many.
        count: usize,
        /// The first of them.
        first: Invalidate,
    },
    /// A batch was prepared and invalidates issued, but `complete` has not been called.
    NotCompleted {
        /// Invalidates waiting for completion.
        pending: usize,
    },
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::Unprepared { count, first } => write!(
                f,
                "{count} invalidate(s) issued outside a prepare/complete batch (first: {first:?})"
            ),
            ProtocolError::NotCompleted { pending } => {
                write!(
                    f,
                    "{pending} invalidate(s) issued but the batch never completed"
                )
            }
        }
    }
}

impl std::error::Error for ProtocolError {}

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

/// A [`TlbModel`] shared between the code under test (as its [`TlbBackend`]) and the test
/// (which plays the CPU and checks frees, e.g. through a [`FreeChecker`]).
#[derive(Clone, Debug, Default)]
pub struct SharedTlbModel(Rc<RefCell<TlbModel>>);

impl SharedTlbModel {
    /// A new, empty shared model.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Borrows the model.
    ///
    /// # Panics
    /// If it is mutably borrowed (test code only: a borrow held across a backend call).
    #[must_use]
    pub fn borrow(&self) -> Ref<'_, TlbModel> {
        self.0.borrow()
    }

    /// Borrows the model mutably.
    ///
    /// # Panics
    /// If it is borrowed (test code only).
    #[must_use]
    pub fn borrow_mut(&self) -> RefMut<'_, TlbModel> {
        self.0.borrow_mut()
    }
}

impl TlbBackend for SharedTlbModel {
    fn prepare(&mut self) {
        self.0.borrow_mut().prepare()
    }
    fn invalidate_va(&mut self, va: VirtAddr, asid: Asid) {
        self.0.borrow_mut().invalidate_va(va, asid)
    }
    fn invalidate_va_all_asids(&mut self, va: VirtAddr) {
        self.0.borrow_mut().invalidate_va_all_asids(va)
    }
    fn invalidate_asid(&mut self, asid: Asid) {
        self.0.borrow_mut().invalidate_asid(asid)
    }
    fn invalidate_all(&mut self) {
        self.0.borrow_mut().invalidate_all()
    }
    fn invalidate_branch_predictor(&mut self) {
        self.0.borrow_mut().invalidate_branch_predictor()
    }
    fn complete(&mut self) {
        self.0.borrow_mut().complete()
    }
    fn counters(&self) -> TlbCounters {
        self.0.borrow().counters()
    }
}

/// A [`Memory`] wrapper that runs [`TlbModel::check_freed`] on every frame range handed
/// back (`free_frames` and `release_mapped`) before passing it on, and records every stale
/// translation found.
#[derive(Debug)]
pub struct FreeChecker<M: Memory> {
    inner: M,
    tlb: SharedTlbModel,
    violations: Vec<StaleTranslation>,
}

impl<M: Memory> FreeChecker<M> {
    /// Wraps `inner`, checking against `tlb`.
    pub fn new(inner: M, tlb: SharedTlbModel) -> Self {
        Self {
            inner,
            tlb,
            violations: Vec::new(),
        }
    }

    /// Every stale translation found so far, in the order of the frees.
    #[must_use]
    pub fn violations(&self) -> &[StaleTranslation] {
        &self.violations
    }

    /// The wrapped memory.
    #[must_use]
    pub fn inner(&self) -> &M {
        &self.inner
    }

    /// The wrapped memory, mutably.
    pub fn inner_mut(&mut self) -> &mut M {
        &mut self.inner
    }

    fn check(&mut self, pa: PhysAddr, frames: usize) {
        let tlb = self.tlb.borrow();
        self.violations.extend(tlb.stale_entries(pa, frames));
    }
}

// SAFETY: allocation and `phys_to_virt` are forwarded to `M`, which upholds the contract;
// the checker only inspects frees.
unsafe impl<M: Memory> Memory for FreeChecker<M> {
    fn allocate_frames(&mut self, count: usize, align: usize) -> Option<PhysAddr> {
        self.inner.allocate_frames(count, align)
    }

    fn free_frames(&mut self, pa: PhysAddr, count: usize) {
        self.check(pa, count);
        self.inner.free_frames(pa, count)
    }

    fn phys_to_virt(&self, pa: PhysAddr) -> NonNull<u8> {
        self.inner.phys_to_virt(pa)
    }

    fn free_table_frames(&mut self, pa: PhysAddr, count: usize) {
        self.check(pa, count);
        self.inner.free_table_frames(pa, count);
    }

    fn release_mapped(&mut self, va: VirtAddr, pa: PhysAddr, bytes: usize) {
        self.check(pa, bytes.div_ceil(PAGE_SIZE as usize));
        self.inner.release_mapped(va, pa, bytes)
    }

    fn release_mapped_run(&mut self, run: MappedRun) {
        self.check(run.pa, run.bytes().div_ceil(u64::from(PAGE_SIZE)) as usize);
        self.inner.release_mapped_run(run)
    }
}

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;

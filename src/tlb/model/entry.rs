//! What the model caches and how invalidates drop it: [`LeafEntry`] and [`TableEntry`]
//! (tagged with the ASID of the access that loaded them), [`Invalidate`] (one request and
//! which entries it drops), and the answer to an access ([`Translation`], [`Via`]).

use super::{WalkLeaf, WalkTable};
use crate::addr::{PhysAddr, VirtAddr};
use crate::tlb::Asid;

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
    pub(super) fn new(leaf: WalkLeaf, va: VirtAddr, via: Via) -> Self {
        let offset = va.as_u64() - leaf.va.as_u64();
        Self {
            pa: PhysAddr::new(leaf.pa.as_u64() + offset),
            leaf,
            via,
        }
    }
}

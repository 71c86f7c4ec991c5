//! The walk interface between the model and a page-table implementation: what one walk
//! found ([`Walk`]: the tables it went through and the leaf, [`WalkLeaf`], [`WalkTable`])
//! and [`WalkSource`], which the table code implements by reading table memory as it is
//! now.

use crate::addr::{PhysAddr, VirtAddr};
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

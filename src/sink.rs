//! The contract between the walkers and whoever must flush before freeing.
//!
//! Walkers never free anything that the hardware may still reach. When `unmap` clears a
//! leaf entry, or `free_tables` unlinks a page table, it reports it here; the
//! `MmuGather` (module `gather`) is the production implementation, which invalidates the TLB
//! and only then hands frames back.

use crate::addr::{PhysAddr, VirtAddr};

/// Size of a mapping (or block) as the hardware sees it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum MapSize {
    /// 4 KiB small page.
    Page4K,
    /// 64 KiB large page (16 replicated short descriptors).
    Large64K,
    /// 1 MiB section.
    Section1M,
    /// 2 MiB LPAE level-2 block.
    Block2M,
    /// 16 MiB supersection (16 replicated short descriptors).
    Super16M,
    /// 1 GiB LPAE level-1 block.
    Block1G,
}

impl MapSize {
    /// Bytes covered.
    #[must_use]
    pub const fn bytes(self) -> u64 {
        match self {
            MapSize::Page4K => 4 << 10,
            MapSize::Large64K => 64 << 10,
            MapSize::Section1M => 1 << 20,
            MapSize::Block2M => 2 << 20,
            MapSize::Super16M => 16 << 20,
            MapSize::Block1G => 1 << 30,
        }
    }
}

/// A leaf entry the walker cleared.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ClearedLeaf {
    /// First VA of the mapping (aligned to `size`).
    pub va: VirtAddr,
    /// Mapping size.
    pub size: MapSize,
    /// First PA of the mapping.
    pub pa: PhysAddr,
    /// The entry was global (nG clear): cached for every ASID.
    pub global: bool,
    /// The mapping was executable (the branch predictor may hold its targets).
    pub executable: bool,
}

/// A leaf entry whose permissions the walker rewrote (`protect`): the frames stay mapped,
/// but the TLB may still hold the old permissions for `[va, va + size)`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ChangedLeaf {
    /// First VA of the mapping (aligned to `size`).
    pub va: VirtAddr,
    /// Mapping size.
    pub size: MapSize,
    /// The entry is global (nG clear): cached for every ASID.
    pub global: bool,
    /// The mapping was executable before or is after the change (the branch predictor may
    /// hold its targets).
    pub executable: bool,
}

/// Receives what a walker removed from (or changed in) live tables. Nothing reported here
/// may be reused, and no reduced permission relied on, until the TLB no longer holds it.
pub trait UnmapSink {
    /// A leaf mapping was cleared. The frames `[pa, pa + size)` are to be handed back with
    /// [`crate::Memory::release_mapped`] after the flush.
    fn leaf_cleared(&mut self, leaf: ClearedLeaf);

    /// A page table that translated `[va, va + span)` was unlinked from its parent entry:
    /// the walk cache may still hold the parent entry for any VA in that span, so the flush
    /// must invalidate by VA inside it (one VA per walk-cache entry the span could use).
    /// `global` is true for tables that held global (kernel) mappings.
    fn table_unlinked(&mut self, va: VirtAddr, span: u64, global: bool);

    /// Table memory `[pa, pa + frames * 4 KiB)` is no longer referenced by any table and is
    /// to be returned with [`crate::Memory::free_frames`] (same `pa` and `frames`) after the
    /// flush. Every table that lived in it has been reported with
    /// [`UnmapSink::table_unlinked`] first.
    fn table_memory_freed(&mut self, pa: PhysAddr, frames: usize);

    /// A leaf's permissions were rewritten in place (or, for a replicated leaf, its copies
    /// cleared before new ones are written: see [`UnmapSink::flush_now`]). Invalidate
    /// `[va, va + size)` as for a cleared leaf; there is nothing to free.
    fn leaf_changed(&mut self, leaf: ChangedLeaf);

    /// Break-before-make: every invalidate owed for what was reported so far is issued and
    /// *complete* on every CPU the sink covers before this returns. `protect` calls it
    /// after clearing all copies of replicated leaves (large pages, supersections) and
    /// before writing their new copies, so no TLB can hold an old copy next to a new one
    /// (two overlapping entries with different permissions: a TLB conflict, Arm ARM
    /// B3.10.1). The gather does a full flush (and may free what it holds, since that is
    /// now safe).
    fn flush_now(&mut self);
}

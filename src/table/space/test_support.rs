//! Hooks for tests: a raw pointer to a leaf entry (for tests, also boot tests, that corrupt
//! a descriptor behind the space's back), and, in host tests only, a second handle on the
//! same tables and a snapshot of every entry. Nothing here is used by the operations.

use core::ptr::NonNull;

use super::{AddressSpace, Table};
use crate::addr::VirtAddr;
use crate::memory::Memory;
use crate::table::{Format, Kind, Word};
#[cfg(all(test, feature = "tlb-model"))]
use core::marker::PhantomData;

impl<F: Format, M: Memory> AddressSpace<F, M> {
    /// Test hook: a raw pointer to the entry that translates `va` at the level where the
    /// walk ends (for tests that corrupt a descriptor behind the space's back to show a
    /// checker catches it); `None` if the walk ends at an invalid entry.
    #[doc(hidden)]
    pub fn entry_ptr_for_test(&self, va: VirtAddr) -> Option<NonNull<F::Word>> {
        let mut t = Table::Root;
        let mut level = self.root.level;
        loop {
            let p = self.slot(t, self.index(level, va.as_u64()));
            // SAFETY: an aligned entry of a table we own.
            let raw = unsafe { F::Word::load(p) };
            match self.kind(level, raw) {
                Kind::Invalid => return None,
                Kind::Leaf(_) => return NonNull::new(p),
                Kind::Table => {
                    t = Table::At(self.table_at(F::table_pa(raw)));
                    level += 1;
                }
            }
        }
    }

    /// Host tests: a second handle on the same tables (same root, same memory model),
    /// for a probe that walks them while `&mut self` is borrowed by an operation (the
    /// tables are only reached through raw pointers, so the two never alias references).
    /// Dropping it frees nothing.
    #[cfg(all(test, feature = "tlb-model"))]
    pub(crate) fn view_for_test(&self) -> Self
    where
        M: Clone,
    {
        AddressSpace {
            mem: self.mem.clone(),
            layout: self.layout,
            bounds: self.bounds,
            features: self.features,
            root: self.root,
            root_pa: self.root_pa,
            root_virt: self.root_virt,
            table_frames: self.table_frames,
            _format: PhantomData,
        }
    }

    /// Every entry of every table, as `(level, VA of the entry, raw)`: a snapshot to
    /// compare before and after a refused operation.
    #[cfg(test)]
    pub(crate) fn snapshot(&self) -> std::vec::Vec<(u8, u64, u64)> {
        let mut v = std::vec::Vec::new();
        self.snapshot_table(Table::Root, self.root.level, 0, &mut v);
        v
    }

    #[cfg(test)]
    fn snapshot_table(
        &self,
        t: Table<F::Word>,
        level: u8,
        base: u64,
        v: &mut std::vec::Vec<(u8, u64, u64)>,
    ) {
        for i in 0..self.entries(level) {
            let va = base + i as u64 * Self::span(level);
            let raw = self.load(t, i);
            v.push((level, va, raw.to_u64()));
            if self.kind(level, raw) == Kind::Table {
                let child = Table::At(self.table_at(F::table_pa(raw)));
                self.snapshot_table(child, level + 1, va, v);
            }
        }
    }
}

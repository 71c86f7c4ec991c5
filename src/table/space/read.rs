//! Reading a space without changing it: [`AddressSpace::translate`] and its checked form,
//! the fast [`AddressSpace::lookup`] of a kernel's software walk, and the [`Mappings`]
//! iterator over a range. All of them go through the walk in `mod.rs`; none writes.

use super::{AddressSpace, Table};
use crate::addr::{PhysAddr, VirtAddr, VirtRange};
use crate::memory::Memory;
use crate::sink::MapSize;
use crate::table::error::OutOfRange;
use crate::table::{Format, Kind, Lookup, Mapping, Translation, WalkCounts, Word};

impl<F: Format, M: Memory> AddressSpace<F, M> {
    /// What `va` translates to through these tables, as the hardware walker would see it
    /// now, or `None` for a translation fault (including VAs outside this table's part of
    /// the address space: [`AddressSpace::translate_checked`] tells them apart).
    #[must_use]
    pub fn translate(&self, va: VirtAddr) -> Option<Translation> {
        let (lo, hi) = self.bounds;
        if va.as_u64() < lo || va.as_u64() >= hi {
            return None;
        }
        let l = self.leaf_at(va.as_u64())?;
        Some(Translation {
            pa: PhysAddr::new(l.pa() + (va.as_u64() - l.va)),
            mapping: l.mapping(),
        })
    }

    /// [`AddressSpace::translate`] that tells a VA outside this table's part of the
    /// address space (the other half of a `TTBCR` split) from a translation fault.
    ///
    /// # Errors
    /// [`OutOfRange`] for a VA this table does not translate.
    pub fn translate_checked(&self, va: VirtAddr) -> Result<Option<Translation>, OutOfRange> {
        let (lo, hi) = self.bounds;
        if va.as_u64() < lo || va.as_u64() >= hi {
            return Err(OutOfRange {
                va,
                bounds: self.bounds,
            });
        }
        Ok(self.translate(va))
    }

    /// [`AddressSpace::mappings`] that refuses a range reaching outside this table's part
    /// of the address space instead of yielding nothing there.
    ///
    /// # Errors
    /// [`OutOfRange`] with the range's first VA outside.
    pub fn mappings_checked(&self, range: VirtRange) -> Result<Mappings<'_, F, M>, OutOfRange> {
        let (lo, hi) = self.bounds;
        let (start, end) = (range.start().as_u64(), range.end().as_u64());
        if !range.is_empty() && (start < lo || end > hi) {
            let first = if start < lo { start } else { start.max(hi) };
            return Err(OutOfRange {
                va: VirtAddr::new(first as u32),
                bounds: self.bounds,
            });
        }
        Ok(self.mappings(range))
    }

    /// The fast path of [`AddressSpace::translate`]: the physical address and the access
    /// permissions `va` has now, as the hardware walker would find them (`None` for a
    /// translation fault or a VA outside this table's part of the address space), without
    /// decoding memory type, shareability, execute permission or global-ness. For a
    /// kernel's software walk on every user copy and fault; [`AddressSpace::translate`]
    /// gives the whole mapping.
    #[inline]
    #[must_use]
    pub fn lookup(&self, va: VirtAddr) -> Option<Lookup> {
        let v = va.as_u32();
        let (lo, hi) = self.bounds;
        if u64::from(v) < lo || u64::from(v) >= hi {
            return None;
        }
        let root = self.root.level;
        let shift = F::SHIFT[root as usize & 3];
        let mut raw = self.load(Table::Root, (v >> shift) as usize & (self.root.entries - 1));
        // The levels below the root written out, so that every shift and mask is a
        // constant: a root at level 1 descends to 2, a table at level 2 (LPAE) to 3.
        let mut level = root;
        if level == 1 {
            match self.kind(1, raw) {
                Kind::Invalid => return None,
                Kind::Leaf(size) => return Some(Self::found(raw, size, v)),
                Kind::Table => raw = self.next_entry::<2>(raw, v),
            }
            level = 2;
        }
        if level == 2 {
            match self.kind(2, raw) {
                Kind::Invalid => return None,
                Kind::Leaf(size) => return Some(Self::found(raw, size, v)),
                Kind::Table if F::LAST_LEVEL >= 3 => raw = self.next_entry::<3>(raw, v),
                Kind::Table => return None,
            }
        }
        match self.kind(3, raw) {
            Kind::Leaf(size) => Some(Self::found(raw, size, v)),
            _ => None,
        }
    }

    /// The entry for `v` at level `L` of the table a table entry `raw` points at.
    #[inline(always)]
    fn next_entry<const L: usize>(&self, raw: F::Word, v: u32) -> F::Word {
        let t = self.table_at(F::table_pa(raw));
        let idx = (v >> F::SHIFT[L]) as usize & (F::ENTRIES[L] - 1);
        // SAFETY: `idx` is below the entry count of a level-`L` table, and `t` is a table of
        // this space (an entry of it points there).
        unsafe { F::Word::load(t.add(idx)) }
    }

    #[inline(always)]
    fn found(raw: F::Word, size: MapSize, v: u32) -> Lookup {
        Lookup {
            pa: PhysAddr::new(F::leaf_pa(raw, size) + u64::from(v & (size.bytes() as u32 - 1))),
            access: F::leaf_access(raw, size),
            size,
        }
    }

    /// Every leaf mapping overlapping `range`, in VA order, each once (a replicated
    /// large page or supersection once, not 16 times). An empty entry costs one read;
    /// tables are read only under entries that point at them. A range outside this
    /// table's part of the address space yields nothing there.
    #[must_use]
    pub fn mappings(&self, range: VirtRange) -> Mappings<'_, F, M> {
        let (lo, hi) = self.bounds;
        Mappings {
            space: self,
            next: range.start().as_u64().max(lo),
            end: range.end().as_u64().min(hi),
            counts: WalkCounts::default(),
        }
    }
}

/// Iterator over the leaf mappings of a range; see [`AddressSpace::mappings`].
pub struct Mappings<'a, F: Format, M: Memory> {
    space: &'a AddressSpace<F, M>,
    next: u64,
    end: u64,
    counts: WalkCounts,
}

impl<F: Format, M: Memory> Mappings<'_, F, M> {
    /// Entries read so far.
    #[must_use]
    pub fn counts(&self) -> WalkCounts {
        self.counts
    }
}

impl<F: Format, M: Memory> Iterator for Mappings<'_, F, M> {
    type Item = Mapping;
    fn next(&mut self) -> Option<Mapping> {
        let leaf = self
            .space
            .next_leaf(self.next, self.end, &mut self.counts)?;
        self.next = leaf.end();
        Some(leaf.mapping())
    }
}

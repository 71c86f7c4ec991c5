//! [`AddressSpace::unmap`]: refuse a range that cuts a block, then clear every leaf with
//! the `Zap` visitor over the shared walk, reporting each to the sink right after its
//! entries are cleared. Freeing the emptied tables is `free`'s job; cutting blocks is
//! `split`'s (`unmap_split`).

use core::ops::ControlFlow;

use super::store::{publish, write_entry};
use super::{AddressSpace, Found, NoTally, Visitor};
use crate::addr::{PhysAddr, VirtAddr, VirtRange};
use crate::memory::Memory;
use crate::sink::{ClearedLeaf, UnmapSink};
use crate::table::error::UnmapError;
use crate::table::{Format, Word};

/// `unmap`'s visitor: clears each leaf, then reports it. Its `leaf` is forced inline so the
/// hot loop over a last-level table makes no call per page but the sink's.
struct Zap<'s, S: ?Sized> {
    sink: &'s mut S,
    coherent: bool,
    cleared: usize,
}

impl<F: Format, S: UnmapSink + ?Sized> Visitor<F, ()> for Zap<'_, S> {
    #[inline(always)]
    fn leaf(&mut self, l: Found<F>) -> ControlFlow<()> {
        let copies = F::shape(l.size).copies;
        if copies == 1 {
            write_entry(self.coherent, l.slot, F::Word::ZERO);
        } else {
            for k in 0..copies {
                // SAFETY: the copies of a leaf are consecutive entries of its table.
                write_entry(self.coherent, unsafe { l.slot.add(k) }, F::Word::ZERO);
            }
        }
        self.cleared += 1;
        self.sink.leaf_cleared(ClearedLeaf {
            va: VirtAddr::new(l.va as u32),
            size: l.size,
            pa: PhysAddr::new(l.pa()),
            global: F::leaf_global(l.raw, l.size),
            executable: F::leaf_executable(l.raw, l.size),
        });
        ControlFlow::Continue(())
    }
}

impl<F: Format, M: Memory> AddressSpace<F, M> {
    /// Clears every leaf mapping in `range` and reports each to `sink` once, with its size
    /// (a replicated large page or supersection, a block of any size, is one report),
    /// right *after* its entries were cleared — so a sink may flush and free from inside
    /// `leaf_cleared`. Empty entries are skipped in one read each. Returns the number of
    /// leaves cleared.
    ///
    /// Table memory is not freed here; see [`AddressSpace::free_tables`].
    ///
    /// # Errors
    /// [`UnmapError::OutOfRange`]; [`UnmapError::PartialBlock`] if the range cuts a leaf
    /// bigger than a page (checked before anything is cleared).
    pub fn unmap<S: UnmapSink + ?Sized>(
        &mut self,
        range: VirtRange,
        sink: &mut S,
    ) -> Result<usize, UnmapError> {
        if range.is_empty() {
            return Ok(0);
        }
        if !self.check_range(&range) {
            return Err(UnmapError::OutOfRange);
        }
        let (start, end) = (range.start().as_u64(), range.end().as_u64());
        if let Some(l) = self.straddling(start, end) {
            return Err(UnmapError::PartialBlock {
                va: VirtAddr::new(l.va as u32),
                size: l.size,
            });
        }
        Ok(self.zap_range(start, end, sink))
    }

    /// The writes of `unmap` over a checked range no leaf straddles.
    pub(super) fn zap_range<S: UnmapSink + ?Sized>(
        &mut self,
        start: u64,
        end: u64,
        sink: &mut S,
    ) -> usize {
        let coherent = self.coherent();
        let mut zap = Zap {
            sink,
            coherent,
            cleared: 0,
        };
        let _ = self.visit_range(start, end, &mut NoTally, &mut zap);
        let cleared = zap.cleared;
        publish(coherent);
        cleared
    }
}

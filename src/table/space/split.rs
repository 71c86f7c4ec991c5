//! Block splitting with break-before-make: [`AddressSpace::unmap_split`] and
//! [`AddressSpace::protect_split`].
//!
//! A block (short: supersection, section, large page; long: 1 GiB or 2 MiB block) that the
//! range cuts is replaced by smaller leaves: the part outside the range keeps the old
//! translation and attributes, the part inside gets the change (left invalid for an unmap,
//! written with the new permissions for a protect). The architecture allows no TLB to hold
//! the old block next to an entry of the new leaves (a TLB conflict, Arm ARM B3.10.1), so
//! each split is:
//!
//! 1. every table frame the splits need is allocated first (a failure returns a typed
//!    error with the tables untouched);
//! 2. *break*: every copy of the block is cleared, its invalidate reported
//!    ([`UnmapSink::leaf_changed`]: nothing to free), the writes published, and the sink
//!    flushes and completes ([`UnmapSink::flush_now`]; one flush for the two blocks a
//!    range can cut);
//! 3. *make*: the smaller leaves are written, in the block's own table where the format
//!    has a smaller leaf at that level (supersection to sections, large page to pages), or
//!    in a new table linked in the block's entry (section to large and small pages, LPAE
//!    block to smaller blocks or pages), down to the pages the range edge needs. For an
//!    unmap the pieces inside the range are reported with [`UnmapSink::leaf_cleared`]
//!    after the make (their frames go back after the gather's next flush).
//!
//! Between break and make the whole block translates nothing: an access from another CPU
//! takes a translation fault, which a kernel must treat as "retry after the address-space
//! lock" (as for `protect` of replicated leaves).

#[cfg(test)]
use super::store::store_probe;
use super::store::{publish, write_entry};
use super::{AddressSpace, Found, Table, LIST_END, PAGE};
use crate::addr::{PhysAddr, VirtAddr, VirtRange};
use crate::memory::Memory;
use crate::sink::{ChangedLeaf, ClearedLeaf, MapSize, UnmapSink};
use crate::table::attrs::{Access, Attributes, Execute};
use crate::table::error::{MapError, ProtectError, UnmapError};
use crate::table::{Changed, Format, LeafShape, Word};

/// What happens to the part of a block inside the range.
#[derive(Clone, Copy)]
enum Inside {
    /// Left invalid, its pieces reported as cleared.
    Unmap,
    /// Written with these attributes.
    Protect(Attributes),
}

/// The state of one block's make.
struct Work<F: Format> {
    start: u64,
    end: u64,
    old: Attributes,
    inside: Inside,
    /// Context of every table linked by this split.
    ctx: F::TableCtx,
    global: bool,
    executable: bool,
    /// Frames allocated for the split's tables.
    list: u64,
    /// Pieces written or cleared inside the range.
    pieces: usize,
}

impl<F: Format, M: Memory> AddressSpace<F, M> {
    /// The largest leaf shape at `level` that this space holds, no bigger than `bytes`
    /// and, with `below`, smaller than it.
    fn shape_at(&self, level: u8, bytes: u64, below: Option<MapSize>) -> Option<LeafShape> {
        F::LEAVES.iter().copied().find(|s| {
            s.level == level
                && s.size.bytes() <= bytes
                && below.is_none_or(|b| s.size < b)
                && self.holds(*s)
        })
    }

    /// Table frames the split of a chunk of shape `s` at `va` cutting `[start, end)`
    /// needs (an upper bound: a short L2 table may land in its group's existing frame).
    fn split_need(&self, s: LeafShape, va: u64, start: u64, end: u64) -> usize {
        let (level, bytes) = (s.level, s.size.bytes());
        let (inner, need) = match self.shape_at(level, bytes, Some(s.size)) {
            Some(x) => (x, 0),
            None => match self.shape_at(level + 1, bytes, None) {
                Some(x) => (x, 1),
                None => return 0,
            },
        };
        let step = inner.size.bytes();
        let mut total = need;
        let mut c = va;
        while c < va + bytes {
            if c < start && start < c + step || c < end && end < c + step {
                total += self.split_need(inner, c, start, end);
            }
            c += step;
        }
        total
    }

    /// The blocks `[start, end)` cuts (at most two; one when the range lies inside one
    /// block).
    fn cut_blocks(&self, start: u64, end: u64) -> [Option<Found<F>>; 2] {
        let a = self.leaf_at(start).filter(|l| l.va < start);
        let b = self
            .leaf_at(end - PAGE)
            .filter(|l| l.end() > end && a.is_none_or(|a| a.va != l.va));
        [a, b]
    }

    /// The context for a table replacing block `l`: one that allows its old execute
    /// permission and, for a protect, the new one; `None` if no context allows both.
    fn split_ctx(&self, l: &Found<F>, new: Option<Attributes>) -> Option<F::TableCtx> {
        let old = l.attrs();
        let ok = |ctx: F::TableCtx| {
            F::table_allows(ctx, old.execute) && new.is_none_or(|a| F::table_allows(ctx, a.execute))
        };
        let first = F::new_table_ctx(self.layout, &self.features, old);
        if ok(first) {
            return Some(first);
        }
        let second = F::new_table_ctx(self.layout, &self.features, new?);
        ok(second).then_some(second)
    }

    /// The break of block `l`: every copy cleared, its invalidate reported.
    fn break_block<S: UnmapSink + ?Sized>(&mut self, l: &Found<F>, w: &Work<F>, sink: &mut S) {
        let coherent = self.coherent();
        for k in 0..F::shape(l.size).copies {
            // SAFETY: the copies of a leaf are consecutive entries of its table, which the
            // space owns (found by the walker during this call).
            write_entry(coherent, unsafe { l.slot.add(k) }, F::Word::ZERO);
        }
        sink.leaf_changed(ChangedLeaf {
            va: VirtAddr::new(l.va as u32),
            size: l.size,
            global: w.global,
            executable: w.executable,
        });
    }

    /// The make of block `l` (broken, and its invalidate complete): its replacement.
    fn make_block<S: UnmapSink + ?Sized>(&mut self, l: &Found<F>, w: &mut Work<F>, sink: &mut S) {
        let shape = F::shape(l.size);
        // `leaf_at` found the block, so the walk to its level exists.
        if let Some(t) = self.table_for(l.va, shape.level) {
            self.split_chunk(t, shape, l.va, l.pa(), w, sink);
        }
    }

    /// Replaces the (cleared) chunk of shape `s` at `va -> pa` in table `t` by smaller
    /// leaves.
    fn split_chunk<S: UnmapSink + ?Sized>(
        &mut self,
        t: Table<F::Word>,
        s: LeafShape,
        va: u64,
        pa: u64,
        w: &mut Work<F>,
        sink: &mut S,
    ) {
        let (level, bytes) = (s.level, s.size.bytes());
        if let Some(inner) = self.shape_at(level, bytes, Some(s.size)) {
            self.place(t, inner, va, bytes, pa, w, sink);
            return;
        }
        let Some(inner) = self.shape_at(level + 1, bytes, None) else {
            return;
        };
        let idx = self.index(level, va);
        let Some(child) = self.link_table(t, level, idx, w.ctx, &mut w.list) else {
            // Cannot happen: `split_need` counts every table (an upper bound).
            debug_assert!(false, "split planned too few frames");
            return;
        };
        self.place(Table::At(child), inner, va, bytes, pa, w, sink);
    }

    /// Writes `[va, va + bytes)` -> `pa` into table `t` as leaves of shape `s`, splitting
    /// further the ones a range edge cuts.
    #[allow(clippy::too_many_arguments)]
    fn place<S: UnmapSink + ?Sized>(
        &mut self,
        t: Table<F::Word>,
        s: LeafShape,
        va: u64,
        bytes: u64,
        pa: u64,
        w: &mut Work<F>,
        sink: &mut S,
    ) {
        let coherent = self.coherent();
        let step = s.size.bytes();
        let mut c = va;
        while c < va + bytes {
            let (ce, cpa) = (c + step, pa + (c - va));
            let idx = self.index(s.level, c);
            let write = |space: &Self, attrs: Attributes| {
                let raw = F::encode_leaf(s.size, cpa, attrs);
                for k in idx..idx + s.copies {
                    write_entry(coherent, space.slot(t, k), raw);
                }
            };
            if ce <= w.start || c >= w.end {
                write(self, w.old);
            } else if c >= w.start && ce <= w.end {
                w.pieces += 1;
                match w.inside {
                    Inside::Protect(new) => write(self, new),
                    Inside::Unmap => sink.leaf_cleared(ClearedLeaf {
                        va: VirtAddr::new(c as u32),
                        size: s.size,
                        pa: PhysAddr::new(cpa),
                        global: w.global,
                        executable: w.executable,
                    }),
                }
            } else {
                self.split_chunk(t, s, c, cpa, w, sink);
            }
            c = ce;
        }
    }

    /// Plans the splits of the blocks `[start, end)` cuts: the blocks, their work, and
    /// the frames they need, allocated. `new` is the protect's change (`None`: unmap).
    #[allow(clippy::type_complexity)]
    fn plan_splits(
        &mut self,
        start: u64,
        end: u64,
        new: Option<(Access, Execute)>,
    ) -> Result<[Option<(Found<F>, Work<F>)>; 2], SplitFail> {
        let mut plans: [Option<(Found<F>, Work<F>)>; 2] = [None, None];
        let mut need = 0;
        for (slot, l) in plans.iter_mut().zip(self.cut_blocks(start, end)) {
            let Some(l) = l else { continue };
            let old = l.attrs();
            let inside = match new {
                None => Inside::Unmap,
                Some((access, execute)) => {
                    let attrs = old.with_permissions(access, execute);
                    if attrs == old {
                        continue;
                    }
                    Inside::Protect(attrs)
                }
            };
            let ctx = self
                .split_ctx(&l, new.map(|(a, e)| old.with_permissions(a, e)))
                .ok_or(SplitFail::Pxn(VirtAddr::new(l.va as u32)))?;
            need += self.split_need(F::shape(l.size), l.va, start, end);
            *slot = Some((
                l,
                Work {
                    start,
                    end,
                    old,
                    inside,
                    ctx,
                    global: F::leaf_global(l.raw, l.size),
                    executable: F::leaf_executable(l.raw, l.size)
                        || matches!(inside, Inside::Protect(a) if a.execute != Execute::Never),
                    list: LIST_END,
                    pieces: 0,
                },
            ));
        }
        let mut list = self.take_frames(need).map_err(|e| match e {
            MapError::TableUnreachable(pa) => SplitFail::Unreachable(pa),
            _ => SplitFail::Memory,
        })?;
        // Hand the frames to the first split; the second takes what is left.
        let mut carry = |w: &mut Work<F>| {
            w.list = list;
            list = LIST_END;
        };
        if let Some((_, w)) = plans.iter_mut().flatten().next() {
            carry(w);
        }
        Ok(plans)
    }

    /// Runs planned splits, passing leftover frames on, and frees what is left at the end.
    fn run_splits<S: UnmapSink + ?Sized>(
        &mut self,
        plans: [Option<(Found<F>, Work<F>)>; 2],
        sink: &mut S,
    ) -> (usize, usize) {
        let (mut blocks, mut pieces) = (0, 0);
        let coherent = self.coherent();
        // Both blocks are broken before one flush: a range cutting two blocks costs one
        // break-before-make flush, not two.
        for (l, w) in plans.iter().flatten() {
            self.break_block(l, w, sink);
        }
        if plans.iter().flatten().next().is_none() {
            return (0, 0);
        }
        // The clears must reach the walkers before the invalidates.
        publish(coherent);
        #[cfg(test)]
        let skip = store_probe::mutant() == store_probe::Mutant::SplitNoFlush;
        #[cfg(not(test))]
        let skip = false;
        if !skip {
            sink.flush_now();
        }
        let mut list = LIST_END;
        for (l, mut w) in plans.into_iter().flatten() {
            if w.list == LIST_END {
                w.list = list;
            }
            self.make_block(&l, &mut w, sink);
            list = w.list;
            blocks += 1;
            pieces += w.pieces;
        }
        publish(coherent);
        // The plan counts every table a split could need; a table that went into its
        // group's existing frame leaves one over. Never linked: free it directly.
        while let Some(f) = self.pop_frame(&mut list) {
            self.mem.free_frames(PhysAddr::new(f), 1);
        }
        (blocks, pieces)
    }

    /// [`AddressSpace::unmap`] that splits the blocks the range cuts instead of refusing
    /// them with [`UnmapError::PartialBlock`]: each cut block (at most two: one per range
    /// edge) is cleared, its invalidate reported and flushed through the sink (one
    /// [`UnmapSink::flush_now`] for both; pass the space's `MmuGather`: its report counts
    /// the flush in `forced_flushes`), then
    /// replaced by smaller leaves for the part outside the range (old attributes), and
    /// the pieces inside are reported cleared. Then the rest of the range is unmapped as
    /// by `unmap`. Returns the leaves cleared (pieces of split blocks included).
    ///
    /// Between the break and the make the whole block translates nothing: another CPU
    /// touching it takes a translation fault, which the kernel must treat as "retry after
    /// the address-space lock"; never split the block holding the running code, its stack
    /// or the tables' own mapping. The smaller leaves are as big as the range edges allow
    /// (a supersection becomes sections, the section an edge cuts an L2 table of large
    /// pages, the large page it cuts small pages; an LPAE 1 GiB block 2 MiB blocks and one
    /// table of pages per cut).
    ///
    /// A guard page in a kernel linear map built of sections is
    /// `unmap_split(page, &mut gather)`. Without a cut block it is exactly `unmap`.
    ///
    /// # Errors
    /// [`UnmapError::OutOfRange`]; [`UnmapError::OutOfMemory`] or
    /// [`UnmapError::TableUnreachable`] if a table for a split could not be allocated:
    /// checked and allocated before anything is written or reported.
    pub fn unmap_split<S: UnmapSink + ?Sized>(
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
        let plans = self.plan_splits(start, end, None).map_err(|e| match e {
            SplitFail::Unreachable(pa) => UnmapError::TableUnreachable(pa),
            // An unmap's table always allows the old permissions.
            SplitFail::Memory | SplitFail::Pxn(_) => UnmapError::OutOfMemory,
        })?;
        let (_, pieces) = self.run_splits(plans, sink);
        Ok(pieces + self.zap_range(start, end, sink))
    }

    /// [`AddressSpace::protect`] that splits the blocks the range cuts instead of
    /// refusing them with [`ProtectError::PartialBlock`]: each cut block whose permissions
    /// change is cleared, its invalidate reported and flushed through the sink
    /// ([`UnmapSink::flush_now`]), then replaced by smaller leaves, the part outside the
    /// range with the old attributes and the part inside with the new permissions. Then the
    /// rest of the range is protected as by `protect`. [`Changed::split`] counts the split
    /// blocks; their pieces inside the range count in [`Changed::leaves`]. A
    /// `set_memory_ro` of part of a linear map built of sections is
    /// `protect_split(range, Access::KernelRo, Execute::Never, &mut gather)`.
    ///
    /// # Errors
    /// As `protect` (but never [`ProtectError::PartialBlock`]), plus
    /// [`ProtectError::PxnConflict`] when no short-descriptor L2 table PXN allows both the
    /// block's old and new execute permissions, [`ProtectError::OutOfMemory`] and
    /// [`ProtectError::TableUnreachable`]: all checked, and the tables allocated, before
    /// anything is written or reported.
    pub fn protect_split<S: UnmapSink + ?Sized>(
        &mut self,
        range: VirtRange,
        access: Access,
        execute: Execute,
        sink: &mut S,
    ) -> Result<Option<Changed>, ProtectError> {
        let Some((start, end)) = self.protect_bounds(range, access, execute)? else {
            return Ok(None);
        };
        self.protect_conflicts(start, end, execute)?;
        let plans = self
            .plan_splits(start, end, Some((access, execute)))
            .map_err(|e| match e {
                SplitFail::Unreachable(pa) => ProtectError::TableUnreachable(pa),
                SplitFail::Memory => ProtectError::OutOfMemory,
                SplitFail::Pxn(va) => ProtectError::PxnConflict(va),
            })?;
        let global = plans.iter().flatten().any(|(_, w)| w.global);
        let executable = plans.iter().flatten().any(|(_, w)| w.executable);
        let (blocks, pieces) = self.run_splits(plans, sink);
        let rest = self.protect_walk(range, access, execute, sink);
        if blocks == 0 {
            return Ok(rest);
        }
        let mut changed = rest.unwrap_or(Changed {
            span: range,
            leaves: 0,
            replicated: 0,
            split: 0,
            global: false,
            executable: false,
        });
        changed.span = range;
        changed.leaves += pieces;
        changed.split = blocks;
        changed.global |= global;
        changed.executable |= executable;
        Ok(Some(changed))
    }
}

/// Why planning a split failed.
enum SplitFail {
    Memory,
    Unreachable(PhysAddr),
    Pxn(VirtAddr),
}

//! The address space itself ([`AddressSpace`]: creation, accessors), the geometry and raw
//! entry reads every operation shares, and the one walk over a range (`visit`, `leaf_at`,
//! `straddling`). Each operation has its own file beside this one (`map`, `unmap`,
//! `protect`, `split`, `free`, `read`), and all write descriptors through `store`. See the
//! [module documentation](super) for walker vs. formats, [`crate::short`] for the rules.

use core::marker::PhantomData;
use core::ops::ControlFlow;
use core::ptr::NonNull;

use super::attrs::Attributes;
use super::{check_layout, Format, Kind, Layout, Mapping, RootShape, WalkCounts, Word};
use crate::addr::{PhysAddr, VirtAddr, VirtRange, PAGE_SIZE};
use crate::memory::Memory;
use crate::sink::MapSize;
use crate::table::error::CreateError;
use store::{clean_for_walker, publish};

mod free;
mod map;
mod protect;
mod read;
#[cfg(test)]
mod run_tests;
mod split;
mod store;
mod test_support;
mod unmap;

pub use protect::BBM_BATCH;
pub use read::Mappings;
#[cfg(test)]
#[cfg_attr(not(feature = "tlb-model"), allow(unused_imports))]
pub(crate) use store::store_probe;

const PAGE: u64 = PAGE_SIZE as u64;
const TOP: u64 = 1 << 32;
/// End marker of the list of frames taken for a `map`.
const LIST_END: u64 = u64::MAX;

/// Where a walk counts the entries it reads ([`WalkCounts`]), or not ([`NoTally`]).
trait Tally {
    fn bump(&mut self, level: u8);
}

impl Tally for WalkCounts {
    #[inline(always)]
    fn bump(&mut self, level: u8) {
        WalkCounts::bump(self, level);
    }
}

/// Counts nothing (walks whose counts nobody reads).
struct NoTally;

impl Tally for NoTally {
    #[inline(always)]
    fn bump(&mut self, _: u8) {}
}

/// What a walk does with each leaf it finds ([`AddressSpace::visit`]).
trait Visitor<F: Format, B> {
    fn leaf(&mut self, l: Found<F>) -> ControlFlow<B>;
}

/// A closure as a [`Visitor`].
struct Each<C>(C);

impl<F: Format, B, C: FnMut(Found<F>) -> ControlFlow<B>> Visitor<F, B> for Each<C> {
    #[inline(always)]
    fn leaf(&mut self, l: Found<F>) -> ControlFlow<B> {
        (self.0)(l)
    }
}

/// A table: the root (possibly several frames) or one reached through `phys_to_virt`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Table<W> {
    Root,
    At(*mut W),
}

/// A leaf entry the walker found.
struct Found<F: Format> {
    size: MapSize,
    /// Its (first) descriptor.
    raw: F::Word,
    /// First VA (aligned to `size`).
    va: u64,
    /// Its first entry.
    slot: *mut F::Word,
    /// The context of the table holding it.
    ctx: F::TableCtx,
}

impl<F: Format> Clone for Found<F> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<F: Format> Copy for Found<F> {}

impl<F: Format> Found<F> {
    fn end(&self) -> u64 {
        self.va + self.size.bytes()
    }
    fn pa(&self) -> u64 {
        F::leaf_pa(self.raw, self.size)
    }
    fn attrs(&self) -> Attributes {
        F::leaf_attrs(self.raw, self.size, self.ctx)
    }
    fn mapping(&self) -> Mapping {
        Mapping {
            va: VirtAddr::new(self.va as u32),
            pa: PhysAddr::new(self.pa()),
            size: self.size,
            attrs: self.attrs(),
        }
    }
}

/// An address space in descriptor format `F`: one root table and the tables below it, in
/// memory obtained from the kernel's [`Memory`].
///
/// `crate::short::AddressSpace<M>` and `crate::lpae::AddressSpace<M>` name the two
/// formats. All table memory is owned by the space. Dropping a space without
/// [`AddressSpace::destroy`] leaks its tables (they may still be live in a TTBR or a TLB,
/// so the space cannot free them on its own).
pub struct AddressSpace<F: Format, M: Memory> {
    mem: M,
    layout: Layout,
    /// `layout.bounds()`, computed once.
    bounds: (u64, u64),
    features: F::Features,
    root: RootShape,
    root_pa: PhysAddr,
    /// Pointer to each 4 KiB frame of the root table (unused slots repeat frame 0).
    root_virt: [NonNull<u8>; 4],
    /// Frames of tables below the root currently linked.
    table_frames: usize,
    _format: PhantomData<F>,
}

// SAFETY: the pointers refer to table memory owned exclusively by this value; moving it
// to another thread moves that ownership. Every access goes through `&self`/`&mut self`.
// The format's types are plain data.
unsafe impl<F: Format, M: Memory + Send> Send for AddressSpace<F, M> {}

impl<F: Format, M: Memory> AddressSpace<F, M> {
    /// Creates an empty address space, allocating its root table from `mem`.
    ///
    /// # Errors
    /// [`CreateError::InvalidSplit`] for `n` outside 1..=7; [`CreateError::OutOfMemory`];
    /// [`CreateError::TableUnreachable`] if the allocator returned memory a TTBR cannot
    /// point to (short: above 4 GiB; long: above 1 TiB) or misaligned (the frames are
    /// returned first).
    pub fn new(mut mem: M, layout: Layout, features: F::Features) -> Result<Self, CreateError> {
        check_layout::<F>(layout)?;
        let root = F::root(layout);
        let pa = mem
            .allocate_frames(root.frames, root.align)
            .ok_or(CreateError::OutOfMemory)?;
        let bytes = (root.frames as u64) * PAGE;
        if !pa.is_aligned(root.align as u64) || pa.as_u64() + bytes > F::TABLE_PA_LIMIT {
            mem.free_frames(pa, root.frames);
            return Err(CreateError::TableUnreachable(pa));
        }
        let first = mem.phys_to_virt(pa);
        let mut root_virt = [first; 4];
        for (i, slot) in root_virt.iter_mut().enumerate().take(root.frames) {
            *slot = mem.phys_to_virt(PhysAddr::new(pa.as_u64() + i as u64 * PAGE));
        }
        let space = AddressSpace {
            mem,
            layout,
            bounds: layout.bounds(),
            features,
            root,
            root_pa: pa,
            root_virt,
            table_frames: 0,
            _format: PhantomData,
        };
        let coherent = space.coherent();
        for f in &space.root_virt[..root.frames] {
            // SAFETY: each root frame is ours (just allocated) and reachable through its
            // pointer per the `Memory` contract; it is not linked anywhere yet.
            unsafe { core::ptr::write_bytes(f.as_ptr(), 0, PAGE as usize) };
            clean_for_walker(coherent, f.as_ptr(), PAGE as usize);
        }
        publish(coherent);
        Ok(space)
    }

    /// Physical address of the root table (what goes in `TTBR0`/`TTBR1`, before the walk
    /// attribute bits and, for long descriptors, the ASID).
    #[must_use]
    pub fn root(&self) -> PhysAddr {
        self.root_pa
    }

    /// The layout given at creation.
    #[must_use]
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The features given at creation.
    #[must_use]
    pub fn features(&self) -> F::Features {
        self.features
    }

    /// 4 KiB frames of tables below the root currently linked (a short-descriptor frame
    /// holds up to four 1 KiB L2 tables; a long-descriptor frame one table).
    #[must_use]
    pub fn table_frames(&self) -> usize {
        self.table_frames
    }

    /// Bytes of table memory held: the root frames plus the frames below.
    #[must_use]
    pub fn table_bytes(&self) -> u64 {
        (self.root.frames + self.table_frames) as u64 * PAGE
    }

    /// The kernel memory model the space allocates from.
    #[must_use]
    pub fn memory(&self) -> &M {
        &self.mem
    }

    /// The kernel memory model, mutably (e.g. for a gather freeing what it collected).
    pub fn memory_mut(&mut self) -> &mut M {
        &mut self.mem
    }

    // ----- geometry and raw entry access --------------------------------------------------

    #[inline(always)]
    fn coherent(&self) -> bool {
        F::coherent_walk(&self.features)
    }

    /// Entries of a table at `level`.
    #[inline(always)]
    fn entries(&self, level: u8) -> usize {
        if level == self.root.level {
            self.root.entries
        } else {
            F::ENTRIES[level as usize]
        }
    }

    /// VA bytes one entry at `level` translates.
    #[inline(always)]
    const fn span(level: u8) -> u64 {
        1 << F::SHIFT[level as usize]
    }

    /// Tables at `level` that share one 4 KiB frame.
    #[inline(always)]
    const fn per_frame(level: u8) -> usize {
        // Powers of two: a shift (the level is often only known at run time, and a division
        // is a library call on ARMv7).
        (PAGE as usize) >> (F::ENTRIES[level as usize] * F::Word::BYTES).trailing_zeros()
    }

    /// Index of the entry translating `va` in a table at `level`.
    #[inline(always)]
    fn index(&self, level: u8, va: u64) -> usize {
        (va >> F::SHIFT[level as usize]) as usize & (self.entries(level) - 1)
    }

    /// Pointer to entry `idx` of table `t`.
    #[inline(always)]
    fn slot(&self, t: Table<F::Word>, idx: usize) -> *mut F::Word {
        match t {
            // SAFETY: `idx` is below the table's entry count (an index computed with
            // `index`, or a copy/group offset that stays inside the table).
            Table::At(base) => unsafe { base.add(idx) },
            Table::Root => {
                let byte = idx * F::Word::BYTES;
                // SAFETY: the byte offset stays inside the 4 KiB frame `root_virt[frame]`
                // points to (the root has at most four frames).
                unsafe {
                    self.root_virt[(byte >> 12) & 3]
                        .as_ptr()
                        .add(byte & 0xfff)
                        .cast()
                }
            }
        }
    }

    #[inline(always)]
    fn load(&self, t: Table<F::Word>, idx: usize) -> F::Word {
        // SAFETY: an aligned entry of a table we own.
        unsafe { F::Word::load(self.slot(t, idx)) }
    }

    /// The table at physical address `pa` (one `phys_to_virt` per table visit).
    #[inline(always)]
    fn table_at(&self, pa: u64) -> *mut F::Word {
        let base = self.mem.phys_to_virt(PhysAddr::new(pa & !0xfff));
        // SAFETY: `pa` is a table inside a 4 KiB frame we linked, so the offset stays
        // inside the frame.
        unsafe { base.as_ptr().add((pa & 0xfff) as usize).cast() }
    }

    /// What `raw` is, with the one-mask test for the common empty entry first.
    #[inline(always)]
    fn kind(&self, level: u8, raw: F::Word) -> Kind {
        if raw.to_u64() & F::VALID_MASK == 0 {
            Kind::Invalid
        } else {
            F::kind(&self.features, level, raw)
        }
    }

    /// The frame of the tables of the group holding entry `idx` of `t` (a table at
    /// `level`), found through any of the group's table entries.
    fn group_frame(&self, t: Table<F::Word>, level: u8, idx: usize) -> Option<u64> {
        let pf = Self::per_frame(level + 1);
        let i0 = idx & !(pf - 1);
        (i0..i0 + pf).find_map(|i| {
            let raw = self.load(t, i);
            (self.kind(level, raw) == Kind::Table).then(|| F::table_pa(raw) & !0xfff)
        })
    }

    /// Whether the table at `p` (at `level`, below the root) has no valid entry (the mask
    /// of every entry OR-ed together, without a branch per entry).
    fn table_empty(&self, p: *mut F::Word, level: u8) -> bool {
        // Every table below the root has the last level's size in both formats; a
        // constant length lets the compiler vectorize the loop.
        const { assert!(F::ENTRIES[2] == F::ENTRIES[F::LAST_LEVEL as usize]) };
        debug_assert!(level >= 2);
        // Read as 64-bit words (tables are at least 1 KiB aligned): half the loads for
        // 32-bit descriptors, which are then folded into one.
        let n = F::ENTRIES[F::LAST_LEVEL as usize] * F::Word::BYTES / 8;
        // SAFETY: a table of `n` aligned 64-bit words we own; with `&mut self` held nobody
        // else writes it.
        let words = unsafe { core::slice::from_raw_parts(p.cast_const().cast::<u64>(), n) };
        // Volatile 64-bit loads become one `ldrd` each on ARMv7 (plain ones are split into
        // two `ldr`); four to a step keep everything in registers.
        let mut all = 0u64;
        for c in words.chunks_exact(4) {
            let p = c.as_ptr();
            // SAFETY: four aligned words of the slice above.
            unsafe {
                all |= p.read_volatile()
                    | p.add(1).read_volatile()
                    | p.add(2).read_volatile()
                    | p.add(3).read_volatile();
            }
        }
        let all = if F::Word::BYTES == 4 {
            (all | all >> 32) & 0xffff_ffff
        } else {
            all
        };
        all & F::VALID_MASK == 0
    }

    fn check_range(&self, range: &VirtRange) -> bool {
        let (lo, hi) = self.bounds;
        range.start().as_u64() >= lo && range.end().as_u64() <= hi
    }

    // ----- leaf discovery -----------------------------------------------------------------

    /// Calls `f` for every leaf overlapping `[start, end)` below table `t` (at `level`, with
    /// `ctx`), in VA order, each once (the first of its copies). An invalid entry costs one
    /// read; a table is entered with one `phys_to_virt`. Stops when `f` breaks.
    #[allow(clippy::too_many_arguments)]
    fn visit<B, C: Tally>(
        &self,
        t: Table<F::Word>,
        level: u8,
        ctx: F::TableCtx,
        start: u64,
        end: u64,
        counts: &mut C,
        f: &mut impl Visitor<F, B>,
    ) -> ControlFlow<B> {
        let shift = F::SHIFT[level as usize];
        let span = 1u64 << shift;
        let mask = self.entries(level) - 1;
        let mut va = start;
        while va < end {
            let idx = (va >> shift) as usize & mask;
            counts.bump(level);
            let raw = self.load(t, idx);
            let next = (va & !(span - 1)) + span;
            match self.kind(level, raw) {
                Kind::Invalid => va = next,
                Kind::Table => {
                    let child = self.table_at(F::table_pa(raw));
                    let stop = end.min(next);
                    let ctx = F::table_ctx(raw);
                    // One child level for both the test and the descent (the generic walk
                    // would also walk a last-level table, only slower).
                    let below = level + 1;
                    if below == F::LAST_LEVEL {
                        self.visit_last(child, ctx, va, stop, counts, f)?;
                    } else {
                        self.visit(Table::At(child), below, ctx, va, stop, counts, f)?;
                    }
                    va = next;
                }
                Kind::Leaf(size) => {
                    let first = idx & !(F::shape(size).copies - 1);
                    let leaf_va = va & !(size.bytes() - 1);
                    f.leaf(Found {
                        size,
                        raw,
                        va: leaf_va,
                        slot: self.slot(t, first),
                        ctx,
                    })?;
                    va = leaf_va + size.bytes();
                }
            }
        }
        ControlFlow::Continue(())
    }

    /// [`Self::visit`] for a table at the last level (`base`, below the root): with the
    /// level a constant, entries are stepped by index and the VA is computed only for the
    /// leaves found. `[start, end)` lies inside the span of the parent entry.
    #[inline(always)]
    fn visit_last<B, C: Tally>(
        &self,
        base: *mut F::Word,
        ctx: F::TableCtx,
        start: u64,
        end: u64,
        counts: &mut C,
        f: &mut impl Visitor<F, B>,
    ) -> ControlFlow<B> {
        let level = F::LAST_LEVEL;
        let shift = F::SHIFT[level as usize];
        let mask = F::ENTRIES[level as usize] - 1;
        if start >= end {
            return ControlFlow::Continue(());
        }
        let i0 = (start >> shift) as usize & mask;
        // The range stays inside one table, so the index of its last VA is not below `i0`.
        let stop = (((end - 1) >> shift) as usize & mask) + 1;
        let va0 = start & !((1u64 << shift) - 1);
        let mut i = i0;
        while i < stop {
            counts.bump(level);
            // SAFETY: `i < stop <= ENTRIES[level]`, an entry of the table at `base`.
            let raw = unsafe { F::Word::load(base.add(i)) };
            if raw.to_u64() & F::VALID_MASK == 0 {
                i += 1;
                continue;
            }
            match F::kind(&self.features, level, raw) {
                Kind::Leaf(size) => {
                    // A leaf's copies are aligned in its table: it spans entries
                    // `first..first + copies`, which `i` lies in.
                    let copies = F::shape(size).copies;
                    let first = i & !(copies - 1);
                    let va = va0 + (((i - i0) as u64) << shift);
                    f.leaf(Found {
                        size,
                        raw,
                        va: va & !(size.bytes() - 1),
                        // SAFETY: `first <= i`, inside the table.
                        slot: unsafe { base.add(first) },
                        ctx,
                    })?;
                    i = first + copies;
                }
                // No format has tables at the last level; reserved encodings are invalid.
                Kind::Invalid | Kind::Table => i += 1,
            }
        }
        ControlFlow::Continue(())
    }

    /// Visits every leaf overlapping `[start, end)` from the root.
    fn visit_range<B, C: Tally>(
        &self,
        start: u64,
        end: u64,
        counts: &mut C,
        f: &mut impl Visitor<F, B>,
    ) -> ControlFlow<B> {
        self.visit(
            Table::Root,
            self.root.level,
            F::ROOT_CTX,
            start,
            end,
            counts,
            f,
        )
    }

    /// The first leaf that overlaps `[va, end)` (it may start before `va`).
    fn next_leaf(&self, va: u64, end: u64, counts: &mut WalkCounts) -> Option<Found<F>> {
        match self.visit_range(va, end, counts, &mut Each(ControlFlow::Break)) {
            ControlFlow::Break(l) => Some(l),
            ControlFlow::Continue(()) => None,
        }
    }

    /// The leaf holding `va`: one read per level.
    fn leaf_at(&self, va: u64) -> Option<Found<F>> {
        let mut t = Table::Root;
        let mut level = self.root.level;
        let mut ctx = F::ROOT_CTX;
        loop {
            let idx = self.index(level, va);
            let raw = self.load(t, idx);
            match self.kind(level, raw) {
                Kind::Invalid => return None,
                Kind::Table => {
                    t = Table::At(self.table_at(F::table_pa(raw)));
                    ctx = F::table_ctx(raw);
                    level += 1;
                }
                Kind::Leaf(size) => {
                    let first = idx & !(F::shape(size).copies - 1);
                    return Some(Found {
                        size,
                        raw,
                        va: va & !(size.bytes() - 1),
                        slot: self.slot(t, first),
                        ctx,
                    });
                }
            }
        }
    }

    /// The leaf cut by a boundary of `[start, end)`, if any.
    fn straddling(&self, start: u64, end: u64) -> Option<Found<F>> {
        let first = self.leaf_at(start);
        if let Some(l) = first {
            if l.va < start {
                return Some(l);
            }
        }
        // A one-page range has one leaf to look at (one walk, not two).
        let last = if end - start == PAGE {
            first
        } else {
            self.leaf_at(end - PAGE)
        };
        if let Some(l) = last {
            if l.end() > end {
                return Some(l);
            }
        }
        None
    }
}

/// Read-only access for the host TLB model's walker (`crate::tlb::model_walk`), which
/// walks these tables the way the hardware would: one entry at a time, by table.
#[cfg(feature = "tlb-model")]
impl<F: Format, M: Memory> AddressSpace<F, M> {
    /// `layout().bounds()`: the VAs this table translates, `[start, end)`.
    pub(crate) fn va_bounds(&self) -> (u64, u64) {
        self.bounds
    }

    /// Level of the root table's entries.
    pub(crate) fn root_level(&self) -> u8 {
        self.root.level
    }

    /// The entry translating `va` in the table at `level`: the root table for `None`,
    /// else the table at physical address `table` (one `phys_to_virt`, as a walk entering
    /// that table does). The caller passes a table of this space at `level`, or a physical
    /// address below [`Format::TABLE_PA_LIMIT`] it found in one of its table entries.
    pub(crate) fn entry_for(&self, table: Option<u64>, level: u8, va: u64) -> F::Word {
        let t = match table {
            None => Table::Root,
            Some(pa) => Table::At(self.table_at(pa)),
        };
        self.load(t, self.index(level, va))
    }

    /// What the entry `raw` at `level` is.
    pub(crate) fn entry_kind(&self, level: u8, raw: F::Word) -> Kind {
        self.kind(level, raw)
    }

    /// VA bytes one entry at `level` translates.
    pub(crate) const fn entry_span(level: u8) -> u64 {
        Self::span(level)
    }
}

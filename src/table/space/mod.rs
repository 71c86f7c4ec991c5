//! The address space: a root table, the tables below it, and the operations on them,
//! written once over a [`Format`].
//!
//! See the [module documentation](super) for the split between this walker and the
//! formats, and [`crate::short`] for the rules every operation follows.

use core::marker::PhantomData;
use core::ops::ControlFlow;
use core::ptr::NonNull;

use super::attrs::{Access, Attributes, Execute};
use super::{
    check_layout, Changed, Format, Kind, Layout, LeafShape, Lookup, Mapping, RootShape,
    Translation, WalkCounts, Word,
};
use crate::addr::{PhysAddr, VirtAddr, VirtEnd, VirtRange, PAGE_SIZE};
use crate::error::{CreateError, FreeTablesError, MapError, OutOfRange, ProtectError, UnmapError};
use crate::memory::Memory;
use crate::sink::{ChangedLeaf, ClearedLeaf, MapSize, UnmapSink};

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

/// Makes descriptor writes at `p..p+len` visible to a non-coherent table walker.
#[inline(always)]
fn clean_for_walker<T>(coherent: bool, p: *const T, len: usize) {
    if !coherent {
        #[cfg(target_arch = "arm")]
        crate::arch::mmu::clean_dcache_for_walker(p as usize, len);
        #[cfg(not(target_arch = "arm"))]
        let _ = (p, len);
    }
}

/// Completes descriptor writes for every table walker in the inner shareable domain and
/// resynchronizes this CPU's context.
#[inline]
fn publish(coherent: bool) {
    #[cfg(target_arch = "arm")]
    crate::arch::mmu::publish_table_writes(coherent);
    #[cfg(not(target_arch = "arm"))]
    let _ = coherent;
}

/// Zeroes `bytes` (a multiple of 32) at `p` (8-byte aligned) with 64-bit stores, four to a
/// loop step: a new table costs a quarter of a store per word instead of the byte-generic
/// `memset` (about three instructions per word on ARMv7). The stores are volatile so the
/// loop is not turned back into a `memset` call.
///
/// # Safety
/// `p..p + bytes` must be memory the caller owns, writable and not reachable by a walker.
#[inline]
unsafe fn zero_table<T>(p: *mut T, bytes: usize) {
    debug_assert!(bytes.is_multiple_of(32) && (p as usize).is_multiple_of(8));
    let mut q = p.cast::<u64>();
    // SAFETY: per the contract, `p..p + bytes` is ours and 8-byte aligned; `end` is its end.
    let end = unsafe { q.add(bytes / 8) };
    while q < end {
        // SAFETY: `q + 4 <= end` (the length is a multiple of 32 bytes), inside the range.
        unsafe {
            q.write_volatile(0);
            q.add(1).write_volatile(0);
            q.add(2).write_volatile(0);
            q.add(3).write_volatile(0);
            q = q.add(4);
        }
    }
}

/// Writes one live descriptor (single-copy atomic) and cleans it for the walker.
#[inline(always)]
fn write_entry<W: Word>(coherent: bool, p: *mut W, v: W) {
    // SAFETY: callers pass an entry of a table the space owns (found by the walker or
    // computed from a checked index).
    unsafe { W::store(p, v) };
    #[cfg(test)]
    store_probe::stored(p as usize, v.to_u64());
    clean_for_walker(coherent, p, W::BYTES);
}

/// Host tests only: a hook called after every live descriptor store, so a test can check an
/// invariant at each instant a walker could observe (break-before-make of replicated
/// leaves: `gather::protect_tests`).
#[cfg(test)]
pub(crate) mod store_probe {
    use std::boxed::Box;
    use std::cell::RefCell;

    use std::cell::Cell;

    type Probe = Box<dyn FnMut(usize, u64)>;

    /// Wrong `protect` sequences a test can switch on to show its checks catch them.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub(crate) enum Mutant {
        /// The real sequence.
        None,
        /// Replicated leaves rewritten copy by copy over the live entries.
        InPlace,
        /// Break-before-make without the flush between the break and the make.
        NoFlush,
        /// A block split without the flush between clearing the block and installing the
        /// table of smaller leaves.
        SplitNoFlush,
    }

    std::thread_local! {
        static PROBE: RefCell<Option<Probe>> = const { RefCell::new(None) };
        static MUTANT: Cell<Mutant> = const { Cell::new(Mutant::None) };
    }

    /// Switches a mutant on (or back to [`Mutant::None`]) on this thread.
    pub(crate) fn set_mutant(m: Mutant) {
        MUTANT.with(|c| c.set(m));
    }

    pub(super) fn mutant() -> Mutant {
        MUTANT.with(Cell::get)
    }

    /// Calls `probe(address, value)` after every descriptor store on this thread until
    /// [`clear`].
    pub(crate) fn set(probe: impl FnMut(usize, u64) + 'static) {
        PROBE.with(|p| *p.borrow_mut() = Some(Box::new(probe)));
    }

    /// Removes the probe.
    pub(crate) fn clear() {
        PROBE.with(|p| *p.borrow_mut() = None);
    }

    pub(super) fn stored(addr: usize, value: u64) {
        PROBE.with(|p| {
            if let Some(f) = p.borrow_mut().as_mut() {
                f(addr, value);
            }
        });
    }
}

#[path = "split.rs"]
mod split;

/// How many replicated leaves `protect` clears before one break-before-make flush.
pub const BBM_BATCH: usize = 16;

/// A replicated leaf between break and make: (first entry, copies, new descriptor).
type Broken<W> = (*mut W, usize, W);

/// `protect`'s visitor: rewrites single entries in place, and replicated ones with
/// break-before-make, [`BBM_BATCH`] to a flush.
struct Protector<'s, F: Format, S: UnmapSink + ?Sized> {
    sink: &'s mut S,
    coherent: bool,
    access: Access,
    execute: Execute,
    first: Option<u64>,
    last_end: u64,
    changed: Changed,
    /// Replicated leaves cleared and reported, waiting for the flush before their new
    /// copies are written: (first entry, copies, new descriptor).
    broken: [Option<Broken<F::Word>>; BBM_BATCH],
    nbroken: usize,
    /// The last decision: a leaf of this size, with these descriptor bits outside its
    /// output address, under this table context, gets these new bits (`None`: unchanged),
    /// and is executable / global. A run of leaves with one set of attributes is decoded
    /// and encoded once.
    memo: Option<Memo<F::TableCtx>>,
}

/// [`Protector`]'s last decision: (size, old bits without the output address, table
/// context, new bits without the output address with executable and global, or `None`).
type Memo<C> = (MapSize, u64, C, Option<(u64, bool, bool)>);

impl<F: Format, S: UnmapSink + ?Sized> Protector<'_, F, S> {
    /// The "make" half: once the sink's flush has completed, no TLB holds an old copy of
    /// any cleared leaf, and the new copies may be written.
    fn make(&mut self) {
        if self.nbroken == 0 {
            return;
        }
        // The clears must reach the walkers before the invalidates that follow them.
        publish(self.coherent);
        #[cfg(test)]
        let skip = store_probe::mutant() == store_probe::Mutant::NoFlush;
        #[cfg(not(test))]
        let skip = false;
        if !skip {
            self.sink.flush_now();
        }
        for b in self.broken[..self.nbroken].iter_mut() {
            if let Some((slot, copies, raw)) = b.take() {
                for k in 0..copies {
                    // SAFETY: the copies of a leaf are consecutive entries of its table,
                    // which the space owns (found by the walker during this call).
                    write_entry(self.coherent, unsafe { slot.add(k) }, raw);
                }
            }
        }
        self.nbroken = 0;
    }
}

impl<F: Format, S: UnmapSink + ?Sized> Visitor<F, ()> for Protector<'_, F, S> {
    #[inline(always)]
    fn leaf(&mut self, l: Found<F>) -> ControlFlow<()> {
        let pa = l.pa();
        let pa_bits = F::pa_field(l.size, pa).to_u64();
        // The attribute bits: what `leaf_attrs` decodes (it reads no output-address bit).
        let key = l.raw.to_u64() ^ pa_bits;
        let decided = match self.memo {
            Some((size, k, ctx, d)) if size == l.size && k == key && ctx == l.ctx => d,
            _ => {
                // The checks before the walk make `execute` agree with the table's context.
                let old = l.attrs();
                let new = old.with_permissions(self.access, self.execute);
                let d = (new != old).then(|| {
                    let executable = old.execute != Execute::Never || new.execute != Execute::Never;
                    (
                        F::encode_leaf(l.size, 0, new).to_u64(),
                        executable,
                        old.global,
                    )
                });
                self.memo = Some((l.size, key, l.ctx, d));
                d
            }
        };
        let Some((bits, executable, global)) = decided else {
            return ControlFlow::Continue(());
        };
        // `encode_leaf(size, pa, a) == encode_leaf(size, 0, a) | pa_field(size, pa)`.
        let raw = F::Word::from_u64(bits | pa_bits);
        debug_assert!(
            raw == F::encode_leaf(
                l.size,
                pa,
                l.attrs().with_permissions(self.access, self.execute)
            )
        );
        let copies = F::shape(l.size).copies;
        #[cfg(test)]
        let copies_in_place = store_probe::mutant() == store_probe::Mutant::InPlace;
        #[cfg(not(test))]
        let copies_in_place = false;
        if copies > 1 && !copies_in_place {
            if self.nbroken == BBM_BATCH {
                self.make();
            }
            for k in 0..copies {
                // SAFETY: as in `make`.
                write_entry(self.coherent, unsafe { l.slot.add(k) }, F::Word::ZERO);
            }
            self.broken[self.nbroken] = Some((l.slot, copies, raw));
            self.nbroken += 1;
            self.changed.replicated += 1;
        } else {
            for k in 0..copies {
                // SAFETY: as in `make` (one copy unless a test mutant writes 16 in place).
                write_entry(self.coherent, unsafe { l.slot.add(k) }, raw);
            }
        }
        self.sink.leaf_changed(ChangedLeaf {
            va: VirtAddr::new(l.va as u32),
            size: l.size,
            global,
            executable,
        });
        self.first.get_or_insert(l.va);
        self.last_end = l.end();
        self.changed.leaves += 1;
        self.changed.global |= global;
        self.changed.executable |= executable;
        ControlFlow::Continue(())
    }
}

impl<F: Format, M: Memory> AddressSpace<F, M> {
    /// Creates an empty address space, allocating its root table from `mem`.
    ///
    /// # Errors
    /// [`CreateError::InvalidSplit`] for `n` outside 1..=7; [`CreateError::OutOfMemory`];
    /// [`CreateError::TableUnreachable`] if the allocator returned memory a TTBR cannot
    /// point to (short: above 4 GiB; long: above 1 TiB) or misaligned (the frames are
    /// returned first).
    pub fn new(mut mem: M, layout: Layout, features: F::Features) -> Result<Self, CreateError> {
        check_layout(layout)?;
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
                    if level + 1 == F::LAST_LEVEL {
                        self.visit_last(child, ctx, va, stop, counts, f)?;
                    } else {
                        self.visit(Table::At(child), level + 1, ctx, va, stop, counts, f)?;
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

    // ----- translate and walk -------------------------------------------------------------

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

    // ----- map ----------------------------------------------------------------------------

    /// Whether `copies` entries at `level` for `va` are free: the walk reaches an invalid
    /// entry above `level`, or all of them are invalid (not a leaf, not an even empty
    /// table).
    fn free_at(&self, va: u64, level: u8, copies: usize) -> bool {
        let mut t = Table::Root;
        let mut l = self.root.level;
        loop {
            let idx = self.index(l, va);
            if l == level {
                return (idx..idx + copies).all(|i| self.load(t, i).to_u64() & F::VALID_MASK == 0);
            }
            let raw = self.load(t, idx);
            if raw.to_u64() & F::VALID_MASK == 0 {
                return true;
            }
            match F::kind(&self.features, l, raw) {
                Kind::Table => {
                    t = Table::At(self.table_at(F::table_pa(raw)));
                    l += 1;
                }
                _ => return false,
            }
        }
    }

    /// Whether this space can have leaves of shape `s`: the CPU has the size, and its
    /// level is not above the root's (a long-descriptor root at level 2, for
    /// `Layout::User { n >= 2 }`, has no entry that could hold a 1 GiB block).
    #[inline(always)]
    fn holds(&self, s: LeafShape) -> bool {
        s.level >= self.root.level && F::size_usable(&self.features, s.size)
    }

    /// The leaf shape of the next chunk of a map at `va -> pa` ending at `end`: the
    /// largest size up to `max` that the CPU has, that VA and PA alignment and the
    /// remaining length allow, and whose entries are free.
    fn choose(&self, va: u64, pa: u64, end: u64, max: MapSize) -> LeafShape {
        for &s in F::LEAVES {
            if s.size > max || !self.holds(s) {
                continue;
            }
            let b = s.size.bytes();
            if va & (b - 1) != 0 || pa & (b - 1) != 0 || end - va < b {
                continue;
            }
            if s.level == F::LAST_LEVEL || self.free_at(va, s.level, s.copies) {
                return s;
            }
        }
        F::LEAVES[F::LEAVES.len() - 1]
    }

    /// How many consecutive chunks from `va -> pa` have shape `s` (the shape `choose` picked
    /// at `va`), in one table: every one up to the end of its table, of the range, or the
    /// next VA where the next bigger leaf could start, and for a leaf above the last level
    /// only while its entries are free (a table there means smaller leaves). So `map`
    /// checks and writes runs of pages, large pages, sections or blocks in one loop,
    /// calling `choose` once per run: `choose` at any VA inside the run would pick `s`
    /// again.
    #[inline]
    fn run(&self, s: LeafShape, va: u64, pa: u64, end: u64, max: MapSize) -> u64 {
        let pos = F::LEAVES
            .iter()
            .position(|l| l.size == s.size)
            .unwrap_or(F::LEAVES.len() - 1);
        let b = s.size.bytes();
        let mut stop = end;
        if s.level > self.root.level {
            let span = Self::span(s.level - 1);
            stop = stop.min((va & !(span - 1)) + span);
        }
        // The next bigger size that could be chosen; if VA and PA disagree modulo it, no
        // bigger size ever fits.
        if let Some(l) = F::LEAVES[..pos]
            .iter()
            .rev()
            .find(|&&l| l.size <= max && self.holds(l))
        {
            let lb = l.size.bytes();
            if (va ^ pa) & (lb - 1) == 0 {
                stop = stop.min((va & !(lb - 1)) + lb);
            }
        }
        // `b` is a power of two: a shift, not a 64-bit division.
        let n = ((stop - va) >> b.trailing_zeros()).max(1);
        if s.level == F::LAST_LEVEL || n == 1 {
            // Last-level entries have nothing below them: `plan_map` checks each is free.
            return n;
        }
        match self.table_for(va, s.level) {
            // No table on the way: every entry below the invalid one is free.
            None => n,
            Some(t) => {
                let idx = self.index(s.level, va);
                let free = |k: u64| {
                    let first = idx + k as usize * s.copies;
                    (first..first + s.copies).all(|i| self.load(t, i).to_u64() & F::VALID_MASK == 0)
                };
                (1..n).find(|&k| !free(k)).unwrap_or(n)
            }
        }
    }

    /// The table at `level` on the walk for `va`, or `None` if the walk meets an invalid
    /// (or leaf) entry above it.
    fn table_for(&self, va: u64, level: u8) -> Option<Table<F::Word>> {
        let mut t = Table::Root;
        let mut l = self.root.level;
        while l < level {
            let raw = self.load(t, self.index(l, va));
            match self.kind(l, raw) {
                Kind::Table => t = Table::At(self.table_at(F::table_pa(raw))),
                _ => return None,
            }
            l += 1;
        }
        Some(t)
    }

    /// Maps `range` to the physical range starting at `pa` with `attrs`, using the largest
    /// mappings up to `max` that alignment (of both VA and PA) and the tables allow (a
    /// region that already has a table is mapped with smaller leaves). Sizes the format
    /// does not have count as the next smaller one (short: 2 MiB / 1 GiB mean 1 MiB /
    /// 16 MiB; long: 64 KiB / 1 MiB mean 4 KiB, 16 MiB means 2 MiB), and so do sizes the
    /// layout's root table cannot hold (long descriptors with `Layout::User { n >= 2 }`,
    /// whose root is a level-2 table: 1 GiB means 2 MiB).
    ///
    /// Nothing is written before everything is checked and every needed table frame is
    /// allocated, so on error the tables are exactly as before and every frame taken has
    /// been returned. New entries are published to the table walkers before this returns
    /// (`dsb` + `isb` on the target); no TLB maintenance is needed because only invalid
    /// entries are written — but if the range was unmapped or its tables freed, that
    /// flush must have completed first.
    ///
    /// # Errors
    /// [`MapError::OutOfRange`], [`MapError::Misaligned`], [`MapError::PhysUnreachable`],
    /// [`MapError::AlreadyMapped`] (some VA of the range is mapped), [`MapError::PxnConflict`],
    /// [`MapError::Unsupported`], [`MapError::ExecutableDevice`] (device or
    /// strongly-ordered memory must be execute-never), [`MapError::GlobalInUserSpace`]
    /// (a [`Layout::User`] space takes only not-global leaves), [`MapError::OutOfMemory`],
    /// [`MapError::TableUnreachable`].
    pub fn map(
        &mut self,
        range: VirtRange,
        pa: PhysAddr,
        attrs: Attributes,
        max: MapSize,
    ) -> Result<(), MapError> {
        if range.is_empty() {
            return Ok(());
        }
        if !self.check_range(&range) {
            return Err(MapError::OutOfRange);
        }
        if !pa.is_aligned(PAGE) {
            return Err(MapError::Misaligned(pa));
        }
        if pa.checked_add(range.len()).is_none() {
            return Err(MapError::PhysUnreachable(pa));
        }
        F::check_permissions(&self.features, attrs.access, attrs.execute)
            .map_err(MapError::Unsupported)?;
        if !attrs.memory.is_normal() && attrs.execute != Execute::Never {
            return Err(MapError::ExecutableDevice);
        }
        if attrs.global && matches!(self.layout, Layout::User { .. }) {
            return Err(MapError::GlobalInUserSpace);
        }
        let (start, end) = (range.start().as_u64(), range.end().as_u64());
        let need = self.plan_map(start, end, pa.as_u64(), attrs.execute, max)?;
        let mut list = self.take_frames(need)?;
        self.apply_map(start, end, pa.as_u64(), attrs, max, &mut list);
        // Nothing should be left; if a bug left frames, give them back rather than leak.
        while let Some(f) = self.pop_frame(&mut list) {
            debug_assert!(false, "map took more frames than it used");
            self.mem.free_frames(PhysAddr::new(f), 1);
        }
        publish(self.coherent());
        Ok(())
    }

    /// The table at `level` (below the root) that the last chunk used, if `va` is in it.
    fn cached(
        cache: Option<(u8, u64, Table<F::Word>)>,
        level: u8,
        va: u64,
    ) -> Option<Table<F::Word>> {
        match cache {
            Some((l, base, t)) if l == level && va >= base && va - base < Self::span(l - 1) => {
                Some(t)
            }
            _ => None,
        }
    }

    /// Phase 1 of `map`: check everything, count the table frames to allocate.
    fn plan_map(
        &self,
        start: u64,
        end: u64,
        pa0: u64,
        execute: Execute,
        max: MapSize,
    ) -> Result<usize, MapError> {
        let mut need = 0;
        // By level: end of the last group this map will allocate a frame for.
        let mut planned = [0u64; 4];
        let mut cache = None;
        let mut va = start;
        let mut pa = pa0;
        while va < end {
            let s = self.choose(va, pa, end, max);
            let n = self.run(s, va, pa, end, max);
            let bytes = n * s.size.bytes();
            let limit = F::pa_limit(&self.features, s.size);
            if pa + bytes > limit {
                // The first chunk that does not fit.
                let fit = limit.saturating_sub(pa) / s.size.bytes();
                let at = pa + fit * s.size.bytes();
                return Err(MapError::PhysUnreachable(PhysAddr::new(at)));
            }
            let table = if s.level == self.root.level {
                Some(Table::Root)
            } else if let Some(t) = Self::cached(cache, s.level, va) {
                Some(t)
            } else {
                let t = self.plan_path(va, s.level, execute, &mut need, &mut planned)?;
                if let Some(t) = t {
                    cache = Some((s.level, va & !(Self::span(s.level - 1) - 1), t));
                }
                t
            };
            if let Some(t) = table {
                let idx = self.index(s.level, va);
                for k in 0..n as usize * s.copies {
                    if self.load(t, idx + k).to_u64() & F::VALID_MASK != 0 {
                        let at = va + k as u64 * Self::span(s.level);
                        return Err(MapError::AlreadyMapped(VirtAddr::new(at as u32)));
                    }
                }
            }
            va += bytes;
            pa += bytes;
        }
        Ok(need)
    }

    /// Walks towards the table at `target` for `va`: the existing table, or `None` when
    /// the walk reaches an invalid entry (then counts the frames of the new tables, once
    /// per group, skipping groups whose frame exists or that this map already counted).
    fn plan_path(
        &self,
        va: u64,
        target: u8,
        execute: Execute,
        need: &mut usize,
        planned: &mut [u64; 4],
    ) -> Result<Option<Table<F::Word>>, MapError> {
        let mut t = Table::Root;
        let mut level = self.root.level;
        while level < target {
            let idx = self.index(level, va);
            let raw = self.load(t, idx);
            match self.kind(level, raw) {
                Kind::Table => {
                    if !F::table_allows(F::table_ctx(raw), execute) {
                        return Err(MapError::PxnConflict(VirtAddr::new(va as u32)));
                    }
                    t = Table::At(self.table_at(F::table_pa(raw)));
                    level += 1;
                }
                Kind::Leaf(_) => return Err(MapError::AlreadyMapped(VirtAddr::new(va as u32))),
                Kind::Invalid => {
                    for l in level + 1..=target {
                        let group = Self::span(l - 1) * Self::per_frame(l) as u64;
                        if va < planned[l as usize] {
                            continue;
                        }
                        if l == level + 1 && self.group_frame(t, level, idx).is_some() {
                            continue;
                        }
                        *need += 1;
                        planned[l as usize] = (va & !(group - 1)) + group;
                    }
                    return Ok(None);
                }
            }
        }
        Ok(Some(t))
    }

    /// Allocates `need` table frames, chained through their first word; all or nothing.
    fn take_frames(&mut self, need: usize) -> Result<u64, MapError> {
        let mut list = LIST_END;
        for _ in 0..need {
            let err = match self.mem.allocate_frames(1, PAGE as usize) {
                Some(f) if f.is_aligned(PAGE) && f.as_u64() + PAGE <= F::TABLE_PA_LIMIT => {
                    let p = self.mem.phys_to_virt(f).cast::<u64>();
                    // SAFETY: a frame we own and have not linked; 8-byte aligned.
                    unsafe { p.as_ptr().write(list) };
                    list = f.as_u64();
                    continue;
                }
                Some(f) => {
                    self.mem.free_frames(f, 1);
                    MapError::TableUnreachable(f)
                }
                None => MapError::OutOfMemory,
            };
            while let Some(f) = self.pop_frame(&mut list) {
                self.mem.free_frames(PhysAddr::new(f), 1);
            }
            return Err(err);
        }
        Ok(list)
    }

    fn pop_frame(&mut self, list: &mut u64) -> Option<u64> {
        if *list == LIST_END {
            return None;
        }
        let f = *list;
        let p = self.mem.phys_to_virt(PhysAddr::new(f)).cast::<u64>();
        // SAFETY: `f` is a frame `take_frames` allocated and chained; not linked.
        *list = unsafe { p.as_ptr().read() };
        Some(f)
    }

    /// Phase 2 of `map`: write. Makes exactly the decisions `plan_map` checked.
    fn apply_map(
        &mut self,
        start: u64,
        end: u64,
        pa0: u64,
        attrs: Attributes,
        max: MapSize,
        list: &mut u64,
    ) {
        // The attribute bits of each leaf size, computed once, when the size is first used.
        let mut templates: [Option<F::Word>; 4] = [None; 4];
        let coherent = self.coherent();
        let mut cache = None;
        let mut va = start;
        let mut pa = pa0;
        while va < end {
            let s = self.choose(va, pa, end, max);
            let t = if s.level == self.root.level {
                Table::Root
            } else if let Some(t) = Self::cached(cache, s.level, va) {
                t
            } else {
                let Some(t) = self.make_path(va, s.level, attrs, list) else {
                    return;
                };
                cache = Some((s.level, va & !(Self::span(s.level - 1) - 1), t));
                t
            };
            let i = F::LEAVES.iter().position(|l| l.size == s.size).unwrap_or(0);
            let template =
                *templates[i & 3].get_or_insert_with(|| F::encode_leaf(s.size, 0, attrs));
            let n = self.run(s, va, pa, end, max);
            let mut idx = self.index(s.level, va);
            for _ in 0..n {
                let raw = template.to_u64() | F::pa_field(s.size, pa).to_u64();
                let raw = F::Word::from_u64(raw);
                for k in idx..idx + s.copies {
                    write_entry(coherent, self.slot(t, k), raw);
                }
                idx += s.copies;
                va += s.size.bytes();
                pa += s.size.bytes();
            }
        }
    }

    /// The table at `target` for `va`, linking new tables on the way (in their group's
    /// frame, or in a frame from `list`). Only called for paths `plan_map` checked.
    fn make_path(
        &mut self,
        va: u64,
        target: u8,
        attrs: Attributes,
        list: &mut u64,
    ) -> Option<Table<F::Word>> {
        let mut t = Table::Root;
        let mut level = self.root.level;
        while level < target {
            let idx = self.index(level, va);
            let raw = self.load(t, idx);
            let child = match self.kind(level, raw) {
                Kind::Table => self.table_at(F::table_pa(raw)),
                _ => {
                    let ctx = F::new_table_ctx(self.layout, &self.features, attrs);
                    self.link_table(t, level, idx, ctx, list)?
                }
            };
            t = Table::At(child);
            level += 1;
        }
        Some(t)
    }

    /// Links a new, empty table under entry `idx` of `t` (a table at `level`).
    fn link_table(
        &mut self,
        t: Table<F::Word>,
        level: u8,
        idx: usize,
        ctx: F::TableCtx,
        list: &mut u64,
    ) -> Option<*mut F::Word> {
        let child = level + 1;
        let bytes = F::ENTRIES[child as usize] * F::Word::BYTES;
        let pf = Self::per_frame(child);
        let coherent = self.coherent();
        let offset = ((idx & (pf - 1)) * bytes) as u64;
        let table = match self.group_frame(t, level, idx) {
            Some(frame) => {
                let table = frame + offset;
                // The slot of an unlinked entry is zero already (tables are emptied before
                // their frame is unlinked); clear it anyway so a stray word can never
                // become live. Not linked yet, so plain stores are enough.
                let p = self.table_at(table);
                // SAFETY: the slot of a frame we own, not referenced by any entry (a table is
                // 1 KiB or 4 KiB, 8-byte aligned).
                unsafe { zero_table(p, bytes) };
                clean_for_walker(coherent, p, bytes);
                table
            }
            None => {
                let Some(f) = self.pop_frame(list) else {
                    // Cannot happen: `plan_map` counted this group.
                    debug_assert!(false, "map planned too few frames");
                    return None;
                };
                let p = self.mem.phys_to_virt(PhysAddr::new(f));
                // SAFETY: a fresh 4 KiB frame we own, not yet linked.
                unsafe { zero_table(p.as_ptr(), PAGE as usize) };
                clean_for_walker(coherent, p.as_ptr(), PAGE as usize);
                self.table_frames += 1;
                f + offset
            }
        };
        // The zeroes must reach the walkers before the entry that makes them reachable.
        publish(coherent);
        write_entry(coherent, self.slot(t, idx), F::encode_table(table, ctx));
        Some(self.table_at(table))
    }

    // ----- unmap --------------------------------------------------------------------------

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
    fn zap_range<S: UnmapSink + ?Sized>(&mut self, start: u64, end: u64, sink: &mut S) -> usize {
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

    // ----- protect ------------------------------------------------------------------------

    /// Changes the access and execute permissions of every leaf in `range`, keeping output
    /// address, size, memory type, shareability and global-ness (changing those needs
    /// break-before-make: unmap, flush, map), and reports every changed leaf to `sink`
    /// ([`UnmapSink::leaf_changed`]), which owes its invalidate: pass the address space's
    /// `MmuGather` and the change gets the gather's range tracking, threshold and
    /// branch-predictor rule, as `unmap` does. Until the gather has flushed, a CPU may still
    /// use the old permissions (a write to a page just made read-only may succeed).
    ///
    /// A single entry is rewritten in place (a single-copy-atomic store; a walk sees the old
    /// or the new entry, and the flush removes the old one). A *replicated* leaf (a short
    /// large page or supersection: 16 identical entries) is rewritten with
    /// break-before-make: all its copies are cleared and reported, the sink flushes
    /// ([`UnmapSink::flush_now`]), then the new copies are written. Writing the copies one by
    /// one over live entries would let a CPU with several walks in flight load one TLB entry
    /// from an old copy and another from a new one: two overlapping entries with different
    /// permissions, which the architecture makes a TLB conflict (Arm ARM B3.10.1; see
    /// [`crate::hazards`]). Up to [`BBM_BATCH`] replicated leaves share one flush. While they
    /// are cleared, an access to them takes a translation fault, so a kernel that protects
    /// live replicated mappings other CPUs use must treat such a fault as "retry after the
    /// address-space lock" (as Linux does for break-before-make on arm64).
    ///
    /// Returns `None` when nothing changed.
    ///
    /// # Errors
    /// [`ProtectError::OutOfRange`], [`ProtectError::PartialBlock`],
    /// [`ProtectError::PxnConflict`] (a short-descriptor page's table has the other PXN),
    /// [`ProtectError::Unsupported`], [`ProtectError::ExecutableDevice`] (`execute` is not
    /// [`Execute::Never`] and the range holds device or strongly-ordered memory); all
    /// checked before anything is written or reported.
    pub fn protect<S: UnmapSink + ?Sized>(
        &mut self,
        range: VirtRange,
        access: Access,
        execute: Execute,
        sink: &mut S,
    ) -> Result<Option<Changed>, ProtectError> {
        let Some((start, end)) = self.protect_bounds(range, access, execute)? else {
            return Ok(None);
        };
        if let Some(l) = self.straddling(start, end) {
            return Err(ProtectError::PartialBlock {
                va: VirtAddr::new(l.va as u32),
                size: l.size,
            });
        }
        self.protect_conflicts(start, end, execute)?;
        Ok(self.protect_walk(range, access, execute, sink))
    }

    /// The checks `protect` and `protect_split` share: `None` for an empty range, else its
    /// bounds once the range and the permissions are valid for this space.
    pub(super) fn protect_bounds(
        &self,
        range: VirtRange,
        access: Access,
        execute: Execute,
    ) -> Result<Option<(u64, u64)>, ProtectError> {
        if range.is_empty() {
            return Ok(None);
        }
        if !self.check_range(&range) {
            return Err(ProtectError::OutOfRange);
        }
        F::check_permissions(&self.features, access, execute).map_err(ProtectError::Unsupported)?;
        Ok(Some((range.start().as_u64(), range.end().as_u64())))
    }

    /// `protect`'s checks of every leaf overlapping `[start, end)`.
    fn protect_conflicts(
        &self,
        start: u64,
        end: u64,
        execute: Execute,
    ) -> Result<(), ProtectError> {
        // With `Execute::Never` neither check below can fail (any memory may be
        // execute-never, and every table of both formats allows it: `Format::table_allows`,
        // checked by `gather::protect_tests::every_table_allows_execute_never`), so the walk
        // is skipped.
        if execute == Execute::Never {
            return Ok(());
        }
        let conflict = self.visit_range(
            start,
            end,
            &mut NoTally,
            &mut Each(|l: Found<F>| {
                let va = VirtAddr::new(l.va as u32);
                if execute != Execute::Never && !l.attrs().memory.is_normal() {
                    ControlFlow::Break(ProtectError::ExecutableDevice(va))
                } else if !F::table_allows(l.ctx, execute) {
                    ControlFlow::Break(ProtectError::PxnConflict(va))
                } else {
                    ControlFlow::Continue(())
                }
            }),
        );
        match conflict {
            ControlFlow::Break(e) => Err(e),
            ControlFlow::Continue(()) => Ok(()),
        }
    }

    /// The writes of `protect` over a checked range no leaf straddles.
    fn protect_walk<S: UnmapSink + ?Sized>(
        &mut self,
        range: VirtRange,
        access: Access,
        execute: Execute,
        sink: &mut S,
    ) -> Option<Changed> {
        let (start, end) = (range.start().as_u64(), range.end().as_u64());
        let coherent = self.coherent();
        let mut changer = Protector::<F, S> {
            sink,
            coherent,
            access,
            execute,
            first: None,
            last_end: 0,
            changed: Changed {
                span: range,
                leaves: 0,
                replicated: 0,
                split: 0,
                global: false,
                executable: false,
            },
            broken: [None; BBM_BATCH],
            nbroken: 0,
            memo: None,
        };
        let _ = self.visit_range(start, end, &mut NoTally, &mut changer);
        changer.make();
        publish(coherent);
        let first = changer.first?;
        let mut changed = changer.changed;
        changed.span = VirtEnd::new(changer.last_end)
            .and_then(|end| VirtRange::new(VirtAddr::new(first as u32), end))
            .unwrap_or(changed.span);
        Some(changed)
    }

    // ----- free tables --------------------------------------------------------------------

    /// Frees empty tables over `range` with Linux `free_pgd_range` semantics: the unit is a
    /// group (the tables sharing one frame: a 4 MiB group of four short L2 tables, one
    /// LPAE table of 2 MiB or 1 GiB); a group's frame is released only if all its tables are
    /// empty and the whole group lies within `bounds` (Linux's `[floor, ceiling)`: what
    /// neighbouring users of the address space still need lies outside; [`VirtRange::ALL`]
    /// when there are none). Lower levels go first, so an LPAE
    /// level-2 table whose level-3 tables were all freed here is freed too. For each freed
    /// frame, every entry that pointed into it is cleared and reported with
    /// `table_unlinked(entry VA, entry span, global)`, then the frame with
    /// `table_memory_freed(frame, 1)`. Nothing is freed directly. Returns the number of
    /// frames released.
    ///
    /// `global` is true unless the layout is [`Layout::User`] (whose walks are tagged
    /// with the process's ASID). VAs outside the layout's bounds count as unused: a
    /// `bounds` starting at the layout's start, or ending at its end, reaches past them.
    ///
    /// # Errors
    /// [`FreeTablesError::OutOfRange`]; [`FreeTablesError::BadBounds`] unless `bounds`
    /// covers `range`.
    pub fn free_tables<S: UnmapSink + ?Sized>(
        &mut self,
        range: VirtRange,
        bounds: VirtRange,
        sink: &mut S,
    ) -> Result<usize, FreeTablesError> {
        if !self.check_range(&range) {
            return Err(FreeTablesError::OutOfRange);
        }
        if !bounds.covers(&range) {
            return Err(FreeTablesError::BadBounds);
        }
        let (floor, ceiling) = (bounds.start(), bounds.end().as_u64());
        if range.is_empty() {
            return Ok(0);
        }
        let global = !matches!(self.layout, Layout::User { .. });
        // VAs outside the layout are never mapped through this table: bounds at the
        // layout's edges reach past them (a long-descriptor `Kernel` root entry spans VAs
        // below the split).
        let (lo, hi) = self.bounds;
        let floor = if floor.as_u64() <= lo {
            0
        } else {
            floor.as_u64()
        };
        let ceiling = if ceiling >= hi { TOP } else { ceiling };
        let bounds = (range.start().as_u64(), range.end().as_u64(), floor, ceiling);
        let freed = self.free_level(Table::Root, self.root.level, bounds, global, sink);
        publish(self.coherent());
        Ok(freed)
    }

    /// `free_tables` below table `t` (at `level`): `(start, end, floor, ceiling)`.
    fn free_level<S: UnmapSink + ?Sized>(
        &mut self,
        t: Table<F::Word>,
        level: u8,
        (start, end, floor, ceiling): (u64, u64, u64, u64),
        global: bool,
        sink: &mut S,
    ) -> usize {
        if level >= F::LAST_LEVEL {
            return 0;
        }
        let child = level + 1;
        let span = Self::span(level);
        let pf = Self::per_frame(child);
        let group = span * pf as u64;
        let coherent = self.coherent();
        let mut freed = 0;
        let mut g = start & !(group - 1);
        while g < end {
            let i0 = self.index(level, g);
            // Lower levels first: their tables' entries here are cleared as they go.
            if child < F::LAST_LEVEL {
                for k in 0..pf {
                    let e = g + k as u64 * span;
                    let raw = self.load(t, i0 + k);
                    if e < end && e + span > start && self.kind(level, raw) == Kind::Table {
                        let below = Table::At(self.table_at(F::table_pa(raw)));
                        let clip = (start.max(e), end.min(e + span), floor, ceiling);
                        freed += self.free_level(below, child, clip, global, sink);
                    }
                }
            }
            if g >= floor && g + group <= ceiling {
                // The group's entries (at most four, 16-byte aligned) are consecutive in one
                // frame of `t`: read them once.
                const { assert!(PAGE as usize / (F::ENTRIES[2] * F::Word::BYTES) <= 4) };
                let first = self.slot(t, i0);
                let mut tables = [None; 4];
                let mut frame = None;
                for (k, e) in tables.iter_mut().enumerate().take(pf) {
                    // SAFETY: `i0 + k` is an entry of the group, in the same frame as `i0`.
                    let p = unsafe { first.add(k) };
                    // SAFETY: an aligned entry of a table we own.
                    let raw = unsafe { F::Word::load(p) };
                    if self.kind(level, raw) == Kind::Table {
                        let pa = F::table_pa(raw);
                        frame.get_or_insert(pa & !0xfff);
                        *e = Some((p, pa));
                    }
                }
                if let Some(frame) = frame {
                    let empty = tables
                        .iter()
                        .flatten()
                        .all(|&(_, pa)| self.table_empty(self.table_at(pa), child));
                    if empty {
                        for (k, e) in tables.iter().enumerate() {
                            if let Some((p, _)) = *e {
                                write_entry(coherent, p, F::Word::ZERO);
                                let va = VirtAddr::new((g + k as u64 * span) as u32);
                                sink.table_unlinked(va, span, global);
                            }
                        }
                        self.table_frames = self.table_frames.saturating_sub(1);
                        freed += 1;
                        sink.table_memory_freed(PhysAddr::new(frame), 1);
                    }
                }
            }
            g += group;
        }
        freed
    }

    /// Tears the space down: unmaps everything (reporting every leaf), unlinks and reports
    /// every table frame, and finally reports the root frames with `table_memory_freed`.
    /// The caller must have switched every CPU away from this table; the flush its sink
    /// does then covers any walk-cache entries left. Returns the memory model.
    pub fn destroy<S: UnmapSink + ?Sized>(mut self, sink: &mut S) -> M {
        let (lo, hi) = self.bounds;
        // The bounds are page aligned, so this range always exists; neither call can fail
        // over the whole space (no leaf straddles its bounds).
        if let Ok(all) = VirtRange::from_start_len(VirtAddr::new(lo as u32), hi.saturating_sub(lo))
        {
            let _ = self.unmap(all, sink);
            let _ = self.free_tables(all, all, sink);
        }
        debug_assert_eq!(self.table_frames, 0);
        sink.table_memory_freed(self.root_pa, self.root.frames);
        self.mem
    }

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
    #[cfg(test)]
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

#[cfg(feature = "tlb-model")]
mod model_impl {
    use super::*;
    use crate::tlb::model::{Walk, WalkLeaf, WalkSource, WalkTable};

    impl<F: Format, M: Memory> AddressSpace<F, M> {
        /// Walks from table `t` at `level` (entered with `ctx`), recording tables below.
        fn walk_below(
            &self,
            mut t: Table<F::Word>,
            mut level: u8,
            ctx: F::TableCtx,
            va: u64,
        ) -> Walk {
            let mut w = Walk::default();
            let mut n = 0;
            let mut ctx = ctx;
            loop {
                let raw = self.load(t, self.index(level, va));
                match self.kind(level, raw) {
                    Kind::Invalid => return w,
                    Kind::Leaf(size) => {
                        w.leaf = Some(WalkLeaf {
                            va: VirtAddr::new((va & !(size.bytes() - 1)) as u32),
                            size,
                            pa: PhysAddr::new(F::leaf_pa(raw, size)),
                            global: F::leaf_global(raw, size),
                            attrs: F::leaf_attrs(raw, size, ctx),
                        });
                        return w;
                    }
                    Kind::Table => {
                        let pa = F::table_pa(raw);
                        let span = Self::span(level);
                        if let Some(slot) = w.tables.get_mut(n) {
                            *slot = Some(WalkTable {
                                level,
                                span_va: VirtAddr::new((va & !(span - 1)) as u32),
                                span,
                                table: PhysAddr::new(pa),
                            });
                        }
                        n += 1;
                        ctx = F::table_ctx(raw);
                        t = Table::At(self.table_at(pa));
                        level += 1;
                    }
                }
            }
        }
    }

    impl<F: Format, M: Memory> WalkSource for AddressSpace<F, M> {
        fn walk(&self, va: VirtAddr) -> Walk {
            let (lo, hi) = self.bounds;
            let v = va.as_u64();
            if v < lo || v >= hi {
                return Walk::default();
            }
            self.walk_below(Table::Root, self.root.level, F::ROOT_CTX, v)
        }

        fn walk_from(&self, level: u8, table: PhysAddr, va: VirtAddr) -> Walk {
            if level < self.root.level
                || level >= F::LAST_LEVEL
                || table.as_u64() >= F::TABLE_PA_LIMIT
            {
                return Walk::default();
            }
            // The context a walk-cache entry would carry (short: the L1 entry's PXN) is
            // the current parent entry's while it still points at `table`; otherwise the
            // root's (the model compares attributes, not the enforcement of PXN).
            let mut ctx = F::ROOT_CTX;
            let (mut p, mut l) = (Table::Root, self.root.level);
            while l <= level {
                let raw = self.load(p, self.index(l, va.as_u64()));
                if self.kind(l, raw) != Kind::Table {
                    break;
                }
                if l == level {
                    if F::table_pa(raw) == table.as_u64() {
                        ctx = F::table_ctx(raw);
                    }
                    break;
                }
                p = Table::At(self.table_at(F::table_pa(raw)));
                l += 1;
            }
            let t = Table::At(self.table_at(table.as_u64()));
            self.walk_below(t, level + 1, ctx, va.as_u64())
        }
    }
}

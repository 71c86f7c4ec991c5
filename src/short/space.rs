//! The address space: one L1 table, its packed L2 tables, and the operations on them.
//!
//! See the [module documentation](super) for the packing, break-before-make and
//! coherency rules every operation here follows.

use core::ptr::NonNull;

use super::attrs::{short_size_at_most, Access, Attributes, Execute};
use super::descriptor::{L1Desc, L1Kind, L2Desc, L2Kind};
use crate::addr::{PhysAddr, VirtAddr, VirtRange, PAGE_SIZE};
use crate::error::{CreateError, Feature, FreeTablesError, MapError, ProtectError, UnmapError};
use crate::memory::Memory;
use crate::sink::{ClearedLeaf, MapSize, UnmapSink};

const MIB: u64 = 1 << 20;
const REGION: u64 = MIB;
const GROUP: u64 = 4 * MIB;
const SUPER: u64 = 16 * MIB;
const LARGE: u64 = 64 << 10;
const PAGE: u64 = PAGE_SIZE as u64;
const TOP: u64 = 1 << 32;
/// L1 entries per 4 KiB frame of L1 table.
const L1_PER_FRAME: usize = 1024;
/// Bytes of one L2 table.
const L2_TABLE_BYTES: u32 = 1024;
/// End marker of the list of frames taken for a `map`.
const LIST_END: u64 = u64::MAX;

/// Which part of the 4 GiB VA space an L1 table translates (`TTBCR.N` split).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Layout {
    /// One table for all 4 GiB (`TTBCR.N = 0`, loaded in `TTBR0`). Tables are treated
    /// as possibly holding global entries.
    Whole,
    /// The `TTBR0` half of a split: VAs below `1 << (32 - n)`, `n` in 1..=7. The table is
    /// `16 KiB >> n` (rounded up to one 4 KiB frame). Typically a process: nG mappings,
    /// tables of non-executable-by-kernel pages get PXN by default.
    User {
        /// `TTBCR.N`.
        n: u8,
    },
    /// The `TTBR1` half of a split: VAs from `1 << (32 - n)` up, `n` in 1..=7. The table
    /// is a full 16 KiB (16 KiB aligned; the hardware indexes it with `VA[31:20]`).
    Kernel {
        /// `TTBCR.N`.
        n: u8,
    },
}

impl Layout {
    /// The VAs this table translates, `[start, end)`.
    #[must_use]
    pub const fn bounds(self) -> (u64, u64) {
        match self {
            Layout::Whole => (0, TOP),
            Layout::User { n } => (0, TOP >> n),
            Layout::Kernel { n } => (TOP >> n, TOP),
        }
    }

    /// `(frames, alignment in bytes)` of the L1 table.
    const fn l1_alloc(self) -> (usize, usize) {
        match self {
            Layout::Whole | Layout::Kernel { .. } => (4, 16384),
            Layout::User { n } => {
                let bytes = 16384usize >> n;
                if bytes >= 4096 {
                    (bytes / 4096, bytes)
                } else {
                    (1, 4096)
                }
            }
        }
    }

    const fn valid(self) -> bool {
        match self {
            Layout::Whole => true,
            Layout::User { n } | Layout::Kernel { n } => n >= 1 && n <= 7,
        }
    }
}

/// Optional VMSAv7 features the tables may use. `crate::arch::mmu::detect_features` reads
/// them from the ID registers on the target.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Features {
    /// The PXN bit exists (`ID_MMFR0.VMSA >= 4`); L1 type `0b11` is a section with PXN.
    pub pxn: bool,
    /// Supersections exist (`ID_MMFR3.Supersec == 0`).
    pub supersections: bool,
    /// Supersections reach 40-bit physical addresses (LPAE-capable CPUs).
    pub pa40: bool,
    /// Table walks are coherent with the data cache (`ID_MMFR3.CohWalk == 1`); otherwise
    /// every descriptor write is cleaned to the point of unification.
    pub coherent_walk: bool,
}

impl Features {
    /// Everything (Cortex-A7/A15 and QEMU's models of them).
    pub const ALL: Features = Features {
        pxn: true,
        supersections: true,
        pa40: true,
        coherent_walk: true,
    };
    /// The VMSAv7 baseline: no PXN, supersections with 32-bit PA, non-coherent walks.
    pub const BASELINE: Features = Features {
        pxn: false,
        supersections: true,
        pa40: false,
        coherent_walk: false,
    };

    /// Decodes the features from `ID_MMFR0` and `ID_MMFR3` values (`VMSA >= 4`: PXN;
    /// `VMSA >= 5`: LPAE, hence 40-bit supersection addresses; `Supersec == 0`:
    /// supersections; `CohWalk == 1`: coherent walks).
    #[must_use]
    pub fn from_id_regs(id_mmfr0: u32, id_mmfr3: u32) -> Features {
        use crate::arch::fields::{ID_MMFR0_BITS, ID_MMFR3_BITS};
        use tock_registers::LocalRegisterCopy;
        let m0 = LocalRegisterCopy::<u32, ID_MMFR0_BITS::Register>::new(id_mmfr0);
        let m3 = LocalRegisterCopy::<u32, ID_MMFR3_BITS::Register>::new(id_mmfr3);
        let vmsa = m0.read(ID_MMFR0_BITS::VMSA);
        let supersections = m3.read(ID_MMFR3_BITS::SUPERSEC) == 0;
        Features {
            pxn: vmsa >= 4,
            supersections,
            pa40: supersections && vmsa >= 5,
            coherent_walk: m3.read(ID_MMFR3_BITS::COHWALK) >= 1,
        }
    }
}

/// A leaf mapping as the tables hold it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Mapping {
    /// First VA (aligned to `size`).
    pub va: VirtAddr,
    /// First PA.
    pub pa: PhysAddr,
    /// Size (4 KiB, 64 KiB, 1 MiB or 16 MiB).
    pub size: MapSize,
    /// Attributes (for pages, `execute` includes the table's PXN).
    pub attrs: Attributes,
}

impl Mapping {
    /// One past the last VA.
    #[must_use]
    pub const fn end(&self) -> u64 {
        self.va.as_u64() + self.size.bytes()
    }
}

/// The result of [`AddressSpace::translate`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Translation {
    /// The physical address `va` translates to.
    pub pa: PhysAddr,
    /// The leaf mapping holding `va`.
    pub mapping: Mapping,
}

/// What [`AddressSpace::protect`] changed: the caller must flush this span from the TLB
/// before relying on the new permissions (or before treating reduced permissions as in
/// force).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Changed {
    /// From the first to the end of the last leaf changed.
    pub span: VirtRange,
    /// Leaf mappings changed.
    pub leaves: usize,
    /// Some changed leaf was global.
    pub global: bool,
    /// Some changed leaf was executable before or after.
    pub executable: bool,
}

/// Entries read by one walk over a range (to check that empty regions cost one read).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct WalkCounts {
    /// L1 entries read.
    pub l1_reads: u64,
    /// L2 entries read.
    pub l2_reads: u64,
}

/// The entries of one L2 table, as reached through `Memory::phys_to_virt`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct L2Base(*mut u32);

impl L2Base {
    fn entry(self, idx: usize) -> *mut u32 {
        // SAFETY: `idx & 0xff` stays inside the 256-entry table.
        unsafe { self.0.add(idx & 0xff) }
    }
    fn read(self, idx: usize) -> u32 {
        // SAFETY: an aligned word of an L2 table we own; volatile because the hardware
        // walker shares it.
        unsafe { self.entry(idx).read_volatile() }
    }
    /// Whether all 256 entries are faults: the type bits of every word OR-ed together,
    /// without a branch per entry (the walker only reads tables; with `&self`/`&mut self`
    /// held nobody else writes them, so plain loads are enough).
    fn is_empty(self) -> bool {
        // SAFETY: the 256 aligned words of an L2 table we own.
        let words = unsafe { core::slice::from_raw_parts(self.0.cast_const(), 256) };
        words.chunks_exact(8).fold(0, |acc, c| {
            acc | c[0] | c[1] | c[2] | c[3] | c[4] | c[5] | c[6] | c[7]
        }) & 3
            == 0
    }
}

/// Where a leaf lives.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Slot {
    /// In the L1 table.
    L1,
    /// In an L2 table whose L1 entry has this PXN.
    L2 { base: L2Base, pxn: bool },
}

#[derive(Clone, Copy, Debug)]
struct Leaf {
    va: u64,
    size: MapSize,
    pa: u64,
    attrs: Attributes,
    slot: Slot,
}

impl Leaf {
    fn end(&self) -> u64 {
        self.va + self.size.bytes()
    }
    fn mapping(&self) -> Mapping {
        Mapping {
            va: VirtAddr::new(self.va as u32),
            pa: PhysAddr::new(self.pa),
            size: self.size,
            attrs: self.attrs,
        }
    }
}

/// A VMSAv7 short-descriptor address space: one L1 table and the L2 tables it points
/// to, in memory obtained from the kernel's [`Memory`].
///
/// All table memory is owned by the space. Dropping a space without
/// [`AddressSpace::destroy`] leaks its tables (they may still be live in a TTBR or a TLB,
/// so the space cannot free them on its own).
pub struct AddressSpace<M: Memory> {
    mem: M,
    layout: Layout,
    features: Features,
    l1_pa: PhysAddr,
    l1_frames: usize,
    /// Pointer to each 4 KiB frame of the L1 table (unused slots repeat frame 0).
    l1_virt: [NonNull<u32>; 4],
    /// L2 frames currently linked.
    l2_frames: usize,
}

// SAFETY: the pointers refer to table memory owned exclusively by this value; moving it
// to another thread moves that ownership. Every access goes through `&self`/`&mut self`.
unsafe impl<M: Memory + Send> Send for AddressSpace<M> {}

impl<M: Memory> AddressSpace<M> {
    /// Creates an empty address space, allocating its L1 table from `mem`.
    ///
    /// # Errors
    /// [`CreateError::InvalidSplit`] for `n` outside 1..=7; [`CreateError::OutOfMemory`];
    /// [`CreateError::TableUnreachable`] if the allocator returned memory above 4 GiB or
    /// misaligned (the frames are returned first).
    pub fn new(mut mem: M, layout: Layout, features: Features) -> Result<Self, CreateError> {
        if let Layout::User { n } | Layout::Kernel { n } = layout {
            if !layout.valid() {
                return Err(CreateError::InvalidSplit(n));
            }
        }
        let (frames, align) = layout.l1_alloc();
        let pa = mem
            .allocate_frames(frames, align)
            .ok_or(CreateError::OutOfMemory)?;
        let bytes = (frames as u64) * PAGE;
        if !pa.is_aligned(align as u64) || pa.as_u64() + bytes > TOP {
            mem.free_frames(pa, frames);
            return Err(CreateError::TableUnreachable(pa));
        }
        let first = mem.phys_to_virt(pa).cast::<u32>();
        let mut l1_virt = [first; 4];
        for (i, slot) in l1_virt.iter_mut().enumerate().take(frames) {
            *slot = mem
                .phys_to_virt(PhysAddr::new(pa.as_u64() + i as u64 * PAGE))
                .cast::<u32>();
        }
        let space = AddressSpace {
            mem,
            layout,
            features,
            l1_pa: pa,
            l1_frames: frames,
            l1_virt,
            l2_frames: 0,
        };
        for f in 0..frames {
            // SAFETY: each L1 frame is ours (just allocated) and reachable through
            // `l1_virt[f]` per the `Memory` contract; it is not linked anywhere yet.
            unsafe { core::ptr::write_bytes(space.l1_virt[f].as_ptr(), 0, L1_PER_FRAME) };
            clean_for_walker(&space.features, space.l1_virt[f].as_ptr(), PAGE as usize);
        }
        publish(&space.features);
        Ok(space)
    }

    /// Physical address of the L1 table (what goes in `TTBR0`/`TTBR1`, before the walk
    /// attribute bits).
    #[must_use]
    pub fn root(&self) -> PhysAddr {
        self.l1_pa
    }

    /// The layout given at creation.
    #[must_use]
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The features given at creation.
    #[must_use]
    pub fn features(&self) -> Features {
        self.features
    }

    /// 4 KiB frames of L2 tables currently linked (each holds up to four 1 KiB tables).
    #[must_use]
    pub fn table_frames(&self) -> usize {
        self.l2_frames
    }

    /// Bytes of table memory held: the L1 frames plus the L2 frames.
    #[must_use]
    pub fn table_bytes(&self) -> u64 {
        (self.l1_frames + self.l2_frames) as u64 * PAGE
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

    // ----- raw entry access -------------------------------------------------------------

    fn l1_ptr(&self, idx: usize) -> *mut u32 {
        let frame = (idx / L1_PER_FRAME) % 4;
        // SAFETY: `idx % 1024` stays inside the 4 KiB frame `l1_virt[frame]` points to.
        unsafe { self.l1_virt[frame].as_ptr().add(idx % L1_PER_FRAME) }
    }

    fn read_l1(&self, idx: usize) -> L1Desc {
        // SAFETY: an aligned word of our L1 table; volatile because the hardware walker
        // shares it.
        L1Desc::from_bits_retain(unsafe { self.l1_ptr(idx).read_volatile() })
    }

    fn write_l1(&mut self, idx: usize, d: L1Desc) {
        let p = self.l1_ptr(idx);
        // SAFETY: as in `read_l1`; one aligned 32-bit store is single-copy atomic, so the
        // walker sees the old or the new entry, never a mix.
        unsafe { p.write_volatile(d.raw()) };
        clean_for_walker(&self.features, p, 4);
    }

    /// Pointer to the first of the 256 entries of the L2 table at `table` (one
    /// `phys_to_virt` per table visit, not per entry).
    fn l2_base(&self, table: u32) -> L2Base {
        let frame = PhysAddr::new(u64::from(table & !0xfff));
        let base = self.mem.phys_to_virt(frame).cast::<u32>();
        // SAFETY: `table` is a 1 KiB-aligned table inside a 4 KiB frame we linked, so the
        // offset stays inside the frame.
        L2Base(unsafe { base.as_ptr().add((table as usize & 0xfff) / 4) })
    }

    fn l2_ptr(&self, table: u32, idx: usize) -> *mut u32 {
        self.l2_base(table).entry(idx)
    }

    #[cfg(any(test, feature = "tlb-model"))]
    fn read_l2(&self, table: u32, idx: usize) -> L2Desc {
        // SAFETY: an aligned word of an L2 table we own; volatile as for L1.
        L2Desc::from_bits_retain(unsafe { self.l2_ptr(table, idx).read_volatile() })
    }

    fn write_l2_at(&mut self, base: L2Base, idx: usize, d: L2Desc) {
        let p = base.entry(idx);
        // SAFETY: an aligned word of an L2 table we own; single-copy atomic word store.
        unsafe { p.write_volatile(d.raw()) };
        clean_for_walker(&self.features, p, 4);
    }

    fn l1_kind(&self, idx: usize) -> L1Kind {
        self.read_l1(idx).kind(self.features.pxn)
    }

    /// The L2 frame of the 4 MiB group `g`, found through any of its L1 table entries.
    fn group_frame(&self, g: usize) -> Option<u32> {
        (4 * g..4 * g + 4).find_map(|i| match self.l1_kind(i) {
            L1Kind::Table { pa, .. } => Some(pa & !0xfff),
            _ => None,
        })
    }

    fn check_range(&self, range: &VirtRange) -> bool {
        let (lo, hi) = self.layout.bounds();
        range.start().as_u64() >= lo && range.end() <= hi
    }

    fn table_pxn_for_new(&self, execute: Execute) -> bool {
        match execute {
            Execute::UserOnly => true,
            Execute::Anywhere => false,
            Execute::Never => matches!(self.layout, Layout::User { .. }) && self.features.pxn,
        }
    }

    // ----- leaf discovery ---------------------------------------------------------------

    /// The first leaf that overlaps `[va, end)` (it may start before `va`).
    fn next_leaf(&self, mut va: u64, end: u64, counts: &mut WalkCounts) -> Option<Leaf> {
        while va < end {
            let idx = (va >> 20) as usize;
            counts.l1_reads += 1;
            match self.l1_kind(idx) {
                L1Kind::Fault => va = (va & !(REGION - 1)) + REGION,
                L1Kind::Section { pa, attrs } => {
                    return Some(Leaf {
                        va: va & !(REGION - 1),
                        size: MapSize::Section1M,
                        pa: u64::from(pa),
                        attrs,
                        slot: Slot::L1,
                    })
                }
                L1Kind::Supersection { pa, attrs } => {
                    return Some(Leaf {
                        va: va & !(SUPER - 1),
                        size: MapSize::Super16M,
                        pa,
                        attrs,
                        slot: Slot::L1,
                    })
                }
                L1Kind::Table { pa: table, pxn } => {
                    let stop = ((va & !(REGION - 1)) + REGION).min(end);
                    let base = self.l2_base(table);
                    let slot = Slot::L2 { base, pxn };
                    while va < stop {
                        counts.l2_reads += 1;
                        let raw = base.read(((va >> 12) & 0xff) as usize);
                        if raw & 3 == 0 {
                            va += PAGE;
                            continue;
                        }
                        match L2Desc::from_bits_retain(raw).kind(pxn) {
                            L2Kind::Fault => va += PAGE,
                            L2Kind::Small { pa, attrs } => {
                                return Some(Leaf {
                                    va: va & !(PAGE - 1),
                                    size: MapSize::Page4K,
                                    pa: u64::from(pa),
                                    attrs,
                                    slot,
                                })
                            }
                            L2Kind::Large { pa, attrs } => {
                                return Some(Leaf {
                                    va: va & !(LARGE - 1),
                                    size: MapSize::Large64K,
                                    pa: u64::from(pa),
                                    attrs,
                                    slot,
                                })
                            }
                        }
                    }
                    va = stop;
                }
            }
        }
        None
    }

    /// The leaf holding `va`: one L1 read, and one L2 read under a table entry.
    fn leaf_at(&self, va: u64) -> Option<Leaf> {
        let (size, pa, attrs, slot) = match self.l1_kind((va >> 20) as usize) {
            L1Kind::Fault => return None,
            L1Kind::Section { pa, attrs } => (MapSize::Section1M, u64::from(pa), attrs, Slot::L1),
            L1Kind::Supersection { pa, attrs } => (MapSize::Super16M, pa, attrs, Slot::L1),
            L1Kind::Table { pa: table, pxn } => {
                let base = self.l2_base(table);
                let slot = Slot::L2 { base, pxn };
                match L2Desc::from_bits_retain(base.read(((va >> 12) & 0xff) as usize)).kind(pxn) {
                    L2Kind::Fault => return None,
                    L2Kind::Small { pa, attrs } => (MapSize::Page4K, u64::from(pa), attrs, slot),
                    L2Kind::Large { pa, attrs } => (MapSize::Large64K, u64::from(pa), attrs, slot),
                }
            }
        };
        Some(Leaf {
            va: va & !(size.bytes() - 1),
            size,
            pa,
            attrs,
            slot,
        })
    }

    /// The leaf cut by a boundary of `[start, end)`, if any.
    fn straddling(&self, start: u64, end: u64) -> Option<Leaf> {
        if let Some(l) = self.leaf_at(start) {
            if l.va < start {
                return Some(l);
            }
        }
        if let Some(l) = self.leaf_at(end - PAGE) {
            if l.end() > end {
                return Some(l);
            }
        }
        None
    }

    /// Writes `leaf`'s entries (1 or 16) with `f(entry index)`.
    fn write_leaf(&mut self, leaf: &Leaf, l1: L1Desc, l2: L2Desc) {
        let copies = match leaf.size {
            MapSize::Super16M | MapSize::Large64K => 16,
            _ => 1,
        };
        match leaf.slot {
            Slot::L1 => {
                let first = (leaf.va >> 20) as usize;
                for i in first..first + copies {
                    self.write_l1(i, l1);
                }
            }
            Slot::L2 { base, .. } => {
                let first = ((leaf.va >> 12) & 0xff) as usize;
                for i in first..first + copies {
                    self.write_l2_at(base, i, l2);
                }
            }
        }
    }

    // ----- translate and walk -----------------------------------------------------------

    /// What `va` translates to through these tables, as the hardware walker would see it
    /// now, or `None` for a translation fault (including VAs outside this table's part of
    /// the address space).
    #[must_use]
    pub fn translate(&self, va: VirtAddr) -> Option<Translation> {
        let (lo, hi) = self.layout.bounds();
        if va.as_u64() < lo || va.as_u64() >= hi {
            return None;
        }
        let l = self.leaf_at(va.as_u64())?;
        Some(Translation {
            pa: PhysAddr::new(l.pa + (va.as_u64() - l.va)),
            mapping: l.mapping(),
        })
    }

    /// Every leaf mapping overlapping `range`, in VA order, each once (a large page or
    /// supersection once, not 16 times). An empty L1 entry costs one read; L2 tables are
    /// read only under L1 entries that point at them. A range outside this table's part of
    /// the address space yields nothing there.
    #[must_use]
    pub fn mappings(&self, range: VirtRange) -> Mappings<'_, M> {
        let (lo, hi) = self.layout.bounds();
        Mappings {
            space: self,
            next: range.start().as_u64().max(lo),
            end: range.end().min(hi),
            counts: WalkCounts::default(),
        }
    }

    // ----- map ----------------------------------------------------------------------------

    /// The size of the next chunk of a map at `va -> pa` ending at `end`.
    fn choose(&self, va: u64, pa: u64, end: u64, max: MapSize) -> MapSize {
        let fits =
            |size: u64| va.is_multiple_of(size) && pa.is_multiple_of(size) && end - va >= size;
        let idx = (va >> 20) as usize;
        if max >= MapSize::Super16M
            && self.features.supersections
            && fits(SUPER)
            && (idx..idx + 16).all(|i| self.read_l1(i).is_fault())
        {
            return MapSize::Super16M;
        }
        if max >= MapSize::Section1M && fits(REGION) && self.read_l1(idx).is_fault() {
            return MapSize::Section1M;
        }
        if max >= MapSize::Large64K && fits(LARGE) {
            return MapSize::Large64K;
        }
        MapSize::Page4K
    }

    /// Maps `range` to the physical range starting at `pa` with `attrs`, using the largest
    /// mappings up to `max` that alignment (of both VA and PA) and the tables allow: a
    /// 1 MiB region that already has an L2 table is mapped with pages; 2 MiB / 1 GiB mean
    /// 1 MiB / 16 MiB here.
    ///
    /// Nothing is written before everything is checked and every needed L2 frame is
    /// allocated, so on error the tables are exactly as before and every frame taken has
    /// been returned. New entries are published to the table walkers before this returns
    /// (`dsb` + `isb` on the target); no TLB maintenance is needed because only invalid
    /// entries are written — but if the range was unmapped or its tables freed, that
    /// flush must have completed first.
    ///
    /// # Errors
    /// [`MapError::OutOfRange`], [`MapError::Misaligned`], [`MapError::PhysUnreachable`],
    /// [`MapError::AlreadyMapped`] (some VA of the range is mapped), [`MapError::PxnConflict`],
    /// [`MapError::Unsupported`], [`MapError::OutOfMemory`], [`MapError::TableUnreachable`].
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
        if attrs.execute == Execute::UserOnly && !self.features.pxn {
            return Err(MapError::Unsupported(Feature::Pxn));
        }
        let max = short_size_at_most(max);
        let need = self.plan_map(&range, pa.as_u64(), attrs, max)?;
        let mut list = self.take_frames(need)?;
        self.apply_map(&range, pa.as_u64(), attrs, max, &mut list);
        // Nothing should be left; if a bug left frames, give them back rather than leak.
        while let Some(f) = self.pop_frame(&mut list) {
            debug_assert!(false, "map took more frames than it used");
            self.mem.free_frames(PhysAddr::new(u64::from(f)), 1);
        }
        publish(&self.features);
        Ok(())
    }

    /// Phase 1 of `map`: check everything, count the L2 frames to allocate.
    fn plan_map(
        &self,
        range: &VirtRange,
        pa0: u64,
        attrs: Attributes,
        max: MapSize,
    ) -> Result<usize, MapError> {
        let (start, end) = (range.start().as_u64(), range.end());
        let want_pxn = match attrs.execute {
            Execute::UserOnly => Some(true),
            Execute::Anywhere => Some(false),
            Execute::Never => None,
        };
        let mut need = 0;
        let mut last_new_group = None;
        // The L1 entry (and L2 table) of the region the last page chunk was in.
        let mut region: Option<(usize, L1Kind, Option<L2Base>)> = None;
        let mut va = start;
        let mut pa = pa0;
        while va < end {
            let size = self.choose(va, pa, end, max);
            let bytes = size.bytes();
            let reach = if size == MapSize::Super16M && self.features.pa40 {
                1 << 40
            } else {
                TOP
            };
            if pa + bytes > reach {
                return Err(MapError::PhysUnreachable(PhysAddr::new(pa)));
            }
            if matches!(size, MapSize::Page4K | MapSize::Large64K) {
                let idx = (va >> 20) as usize;
                let (kind, base) = match region {
                    Some((i, k, b)) if i == idx => (k, b),
                    _ => {
                        let k = self.l1_kind(idx);
                        let b = match k {
                            L1Kind::Table { pa: table, .. } => Some(self.l2_base(table)),
                            _ => None,
                        };
                        if let L1Kind::Fault = k {
                            let g = idx / 4;
                            if last_new_group != Some(g) && self.group_frame(g).is_none() {
                                need += 1;
                                last_new_group = Some(g);
                            }
                        }
                        region = Some((idx, k, b));
                        (k, b)
                    }
                };
                match (kind, base) {
                    (L1Kind::Fault, _) => {}
                    (L1Kind::Table { pxn, .. }, Some(base)) => {
                        if want_pxn.is_some_and(|w| w != pxn) {
                            return Err(MapError::PxnConflict(VirtAddr::new(va as u32)));
                        }
                        let first = ((va >> 12) & 0xff) as usize;
                        for k in 0..(bytes / PAGE) as usize {
                            if base.read(first + k) & 3 != 0 {
                                let at = va + k as u64 * PAGE;
                                return Err(MapError::AlreadyMapped(VirtAddr::new(at as u32)));
                            }
                        }
                    }
                    _ => return Err(MapError::AlreadyMapped(VirtAddr::new(va as u32))),
                }
            }
            va += bytes;
            pa += bytes;
        }
        Ok(need)
    }

    /// Allocates `need` L2 frames, chained through their first word; all or nothing.
    fn take_frames(&mut self, need: usize) -> Result<u64, MapError> {
        let mut list = LIST_END;
        for _ in 0..need {
            let err = match self.mem.allocate_frames(1, PAGE as usize) {
                Some(f) if f.is_aligned(PAGE) && f.as_u64() + PAGE <= TOP => {
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
                self.mem.free_frames(PhysAddr::new(u64::from(f)), 1);
            }
            return Err(err);
        }
        Ok(list)
    }

    fn pop_frame(&mut self, list: &mut u64) -> Option<u32> {
        if *list == LIST_END {
            return None;
        }
        let f = *list;
        let p = self.mem.phys_to_virt(PhysAddr::new(f)).cast::<u64>();
        // SAFETY: `f` is a frame `take_frames` allocated and chained; not linked.
        *list = unsafe { p.as_ptr().read() };
        Some(f as u32)
    }

    /// Phase 2 of `map`: write. Uses exactly the decisions `plan_map` checked.
    fn apply_map(
        &mut self,
        range: &VirtRange,
        pa0: u64,
        attrs: Attributes,
        max: MapSize,
        list: &mut u64,
    ) {
        let (start, end) = (range.start().as_u64(), range.end());
        // Attribute bits of the page descriptors, computed once.
        let small = L2Desc::small(0, attrs).raw();
        let large = L2Desc::large(0, attrs).raw();
        // The region the last page chunk went into, and its table.
        let mut region: Option<(usize, L2Base)> = None;
        let mut va = start;
        let mut pa = pa0;
        while va < end {
            let size = self.choose(va, pa, end, max);
            let idx = (va >> 20) as usize;
            match size {
                MapSize::Super16M => {
                    let d = L1Desc::supersection(pa, attrs);
                    for i in idx..idx + 16 {
                        self.write_l1(i, d);
                    }
                }
                MapSize::Section1M => self.write_l1(idx, L1Desc::section(pa as u32, attrs)),
                _ => {
                    let base = match region {
                        Some((i, b)) if i == idx => b,
                        _ => {
                            let Some(t) = self.table_for(idx, attrs.execute, list) else {
                                return;
                            };
                            let b = self.l2_base(t);
                            region = Some((idx, b));
                            b
                        }
                    };
                    let first = ((va >> 12) & 0xff) as usize;
                    if size == MapSize::Large64K {
                        let d = L2Desc::from_bits_retain(large | (pa as u32 & 0xffff_0000));
                        for i in first..first + 16 {
                            self.write_l2_at(base, i, d);
                        }
                    } else {
                        let d = L2Desc::from_bits_retain(small | (pa as u32 & 0xffff_f000));
                        self.write_l2_at(base, first, d);
                    }
                }
            }
            va += size.bytes();
            pa += size.bytes();
        }
    }

    /// The L2 table of region `idx`, linking a new one (in the group's frame, or in a frame
    /// from `list`) if the region has none. Only called for regions `plan_map` checked.
    fn table_for(&mut self, idx: usize, execute: Execute, list: &mut u64) -> Option<u32> {
        match self.l1_kind(idx) {
            L1Kind::Table { pa: t, .. } => Some(t),
            _ => {
                let t = match self.group_frame(idx / 4) {
                    Some(f) => {
                        let t = f + (idx as u32 % 4) * L2_TABLE_BYTES;
                        // The slot of an unlinked region is zero already (tables are
                        // emptied before their frame is unlinked); clear it anyway so a
                        // stray word can never become live. Not linked yet, so plain
                        // stores are enough.
                        let base = self.l2_base(t);
                        // SAFETY: the 1 KiB slot of a frame we own, not referenced by
                        // any L1 entry.
                        unsafe { core::ptr::write_bytes(base.0, 0, 256) };
                        clean_for_walker(&self.features, base.0, L2_TABLE_BYTES as usize);
                        t
                    }
                    None => {
                        let Some(f) = self.pop_frame(list) else {
                            // Cannot happen: `plan_map` counted this group.
                            debug_assert!(false, "map planned too few frames");
                            return None;
                        };
                        let p = self.mem.phys_to_virt(PhysAddr::new(u64::from(f)));
                        // SAFETY: a fresh frame we own, not yet linked.
                        unsafe { core::ptr::write_bytes(p.as_ptr(), 0, PAGE as usize) };
                        clean_for_walker(&self.features, p.as_ptr().cast::<u8>(), PAGE as usize);
                        self.l2_frames += 1;
                        f + (idx as u32 % 4) * L2_TABLE_BYTES
                    }
                };
                let pxn = self.table_pxn_for_new(execute);
                self.write_l1(idx, L1Desc::table(t, pxn));
                Some(t)
            }
        }
    }

    // ----- unmap --------------------------------------------------------------------------

    /// Clears every leaf mapping in `range` and reports each to `sink` once, with its size
    /// (a 64 KiB large page or a 16 MiB supersection is one report), right *after* its
    /// entries were cleared — so a sink may flush and free from inside `leaf_cleared`.
    /// Empty L1 entries are skipped in one read each. Returns the number of leaves cleared.
    ///
    /// Table memory is not freed here; see [`AddressSpace::free_tables`].
    ///
    /// # Errors
    /// [`UnmapError::OutOfRange`]; [`UnmapError::PartialBlock`] if the range cuts a large
    /// page, section or supersection (checked before anything is cleared).
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
        let (start, end) = (range.start().as_u64(), range.end());
        if let Some(l) = self.straddling(start, end) {
            return Err(UnmapError::PartialBlock {
                va: VirtAddr::new(l.va as u32),
                size: l.size,
            });
        }
        let mut cleared = 0;
        let mut va = start;
        while va < end {
            let idx = (va >> 20) as usize;
            let region_end = (va & !(REGION - 1)) + REGION;
            match self.l1_kind(idx) {
                L1Kind::Fault => va = region_end,
                L1Kind::Section { pa, attrs } => {
                    self.write_l1(idx, L1Desc::FAULT);
                    cleared += 1;
                    report(
                        sink,
                        va & !(REGION - 1),
                        MapSize::Section1M,
                        u64::from(pa),
                        attrs,
                    );
                    va = region_end;
                }
                L1Kind::Supersection { pa, attrs } => {
                    let first = va & !(SUPER - 1);
                    let i0 = (first >> 20) as usize;
                    for i in i0..i0 + 16 {
                        self.write_l1(i, L1Desc::FAULT);
                    }
                    cleared += 1;
                    report(sink, first, MapSize::Super16M, pa, attrs);
                    va = first + SUPER;
                }
                L1Kind::Table { pa: table, .. } => {
                    // The hot loop: one `phys_to_virt` per table, a raw word per entry,
                    // and only the bits a `ClearedLeaf` needs decoded.
                    let base = self.l2_base(table);
                    let stop = region_end.min(end);
                    while va < stop {
                        let i = ((va >> 12) & 0xff) as usize;
                        let raw = base.read(i);
                        if raw & 3 == 0 {
                            va += PAGE;
                            continue;
                        }
                        let d = L2Desc::from_bits_retain(raw);
                        let (size, pa, xn) = if d.contains(L2Desc::SMALL) {
                            (
                                MapSize::Page4K,
                                raw & 0xffff_f000,
                                d.contains(L2Desc::TYPE0),
                            )
                        } else {
                            (
                                MapSize::Large64K,
                                raw & 0xffff_0000,
                                d.contains(L2Desc::LARGE_XN),
                            )
                        };
                        let first = va & !(size.bytes() - 1);
                        let i0 = ((first >> 12) & 0xff) as usize;
                        let copies = if size == MapSize::Large64K { 16 } else { 1 };
                        for k in i0..i0 + copies {
                            self.write_l2_at(base, k, L2Desc::FAULT);
                        }
                        cleared += 1;
                        sink.leaf_cleared(ClearedLeaf {
                            va: VirtAddr::new(first as u32),
                            size,
                            pa: PhysAddr::new(u64::from(pa)),
                            global: !d.contains(L2Desc::NG),
                            executable: !xn,
                        });
                        va = first + size.bytes();
                    }
                }
            }
        }
        publish(&self.features);
        Ok(cleared)
    }

    // ----- protect ------------------------------------------------------------------------

    /// Changes the access and execute permissions of every leaf in `range`, keeping output
    /// address, size, memory type, shareability and global-ness (changing those needs
    /// break-before-make: unmap, flush, map). A permission-only change of a live entry is
    /// allowed without break-before-make; the caller flushes the returned span before
    /// relying on it. Returns `None` when nothing changed.
    ///
    /// # Errors
    /// [`ProtectError::OutOfRange`], [`ProtectError::PartialBlock`],
    /// [`ProtectError::PxnConflict`] (a page's table has the other PXN),
    /// [`ProtectError::Unsupported`]; all checked before anything is written.
    pub fn protect(
        &mut self,
        range: VirtRange,
        access: Access,
        execute: Execute,
    ) -> Result<Option<Changed>, ProtectError> {
        if range.is_empty() {
            return Ok(None);
        }
        if !self.check_range(&range) {
            return Err(ProtectError::OutOfRange);
        }
        if execute == Execute::UserOnly && !self.features.pxn {
            return Err(ProtectError::Unsupported(Feature::Pxn));
        }
        let (start, end) = (range.start().as_u64(), range.end());
        if let Some(l) = self.straddling(start, end) {
            return Err(ProtectError::PartialBlock {
                va: VirtAddr::new(l.va as u32),
                size: l.size,
            });
        }
        let mut va = start;
        while let Some(leaf) = self.next_leaf(va, end, &mut WalkCounts::default()) {
            if let Slot::L2 { pxn, .. } = leaf.slot {
                let conflict = match execute {
                    Execute::UserOnly => !pxn,
                    Execute::Anywhere => pxn,
                    Execute::Never => false,
                };
                if conflict {
                    return Err(ProtectError::PxnConflict(VirtAddr::new(leaf.va as u32)));
                }
            }
            va = leaf.end();
        }
        let mut first = None;
        let mut last_end = 0;
        let mut changed = Changed {
            span: range,
            leaves: 0,
            global: false,
            executable: false,
        };
        let mut va = start;
        while let Some(leaf) = self.next_leaf(va, end, &mut WalkCounts::default()) {
            va = leaf.end();
            // The PXN check above makes `execute` agree with the table's PXN for pages.
            let new = leaf.attrs.with_permissions(access, execute);
            if new == leaf.attrs {
                continue;
            }
            let (l1, l2) = match leaf.size {
                MapSize::Super16M => (L1Desc::supersection(leaf.pa, new), L2Desc::FAULT),
                MapSize::Section1M => (L1Desc::section(leaf.pa as u32, new), L2Desc::FAULT),
                MapSize::Large64K => (L1Desc::FAULT, L2Desc::large(leaf.pa as u32, new)),
                _ => (L1Desc::FAULT, L2Desc::small(leaf.pa as u32, new)),
            };
            self.write_leaf(&leaf, l1, l2);
            first.get_or_insert(leaf.va);
            last_end = leaf.end();
            changed.leaves += 1;
            changed.global |= leaf.attrs.global;
            changed.executable |=
                leaf.attrs.execute != Execute::Never || new.execute != Execute::Never;
        }
        publish(&self.features);
        let Some(first) = first else {
            return Ok(None);
        };
        changed.span =
            VirtRange::new(VirtAddr::new(first as u32), last_end).unwrap_or(changed.span);
        Ok(Some(changed))
    }

    // ----- free tables --------------------------------------------------------------------

    /// Frees empty L2 tables over `range` with Linux `free_pgd_range` semantics: the unit
    /// is a 4 MiB group (the four 1 MiB tables sharing one 4 KiB frame); a group's frame is
    /// released only if all its tables are empty and the whole group lies within
    /// `[floor, ceiling)` (what neighbouring users of the address space still need lies
    /// outside). For each freed frame, every L1 entry that pointed into it is cleared and
    /// reported with `table_unlinked(region, 1 MiB, global)`, then the frame with
    /// `table_memory_freed(frame, 1)`. Nothing is freed directly. Returns the number of
    /// frames released.
    ///
    /// `global` is true unless the layout is [`Layout::User`] (whose walks are tagged
    /// with the process's ASID).
    ///
    /// # Errors
    /// [`FreeTablesError::OutOfRange`]; [`FreeTablesError::BadBounds`] unless
    /// `floor <= range.start` and `range.end <= ceiling <= 4 GiB`.
    pub fn free_tables<S: UnmapSink + ?Sized>(
        &mut self,
        range: VirtRange,
        floor: VirtAddr,
        ceiling: u64,
        sink: &mut S,
    ) -> Result<usize, FreeTablesError> {
        if !self.check_range(&range) {
            return Err(FreeTablesError::OutOfRange);
        }
        if floor > range.start() || range.end() > ceiling || ceiling > TOP {
            return Err(FreeTablesError::BadBounds);
        }
        if range.is_empty() {
            return Ok(0);
        }
        let global = !matches!(self.layout, Layout::User { .. });
        let first_group = (range.start().as_u64() / GROUP) as usize;
        let last_group = range.end().div_ceil(GROUP) as usize;
        let mut freed = 0;
        for g in first_group..last_group {
            let g_start = g as u64 * GROUP;
            if g_start < floor.as_u64() || g_start + GROUP > ceiling {
                continue;
            }
            let Some(frame) = self.group_frame(g) else {
                continue;
            };
            let empty = (4 * g..4 * g + 4).all(|i| match self.l1_kind(i) {
                L1Kind::Table { pa, .. } => self.l2_base(pa).is_empty(),
                _ => true,
            });
            if !empty {
                continue;
            }
            for i in 4 * g..4 * g + 4 {
                if let L1Kind::Table { .. } = self.l1_kind(i) {
                    self.write_l1(i, L1Desc::FAULT);
                    sink.table_unlinked(VirtAddr::new((i as u64 * REGION) as u32), REGION, global);
                }
            }
            self.l2_frames = self.l2_frames.saturating_sub(1);
            freed += 1;
            sink.table_memory_freed(PhysAddr::new(u64::from(frame)), 1);
        }
        publish(&self.features);
        Ok(freed)
    }

    /// Tears the space down: unmaps everything (reporting every leaf), unlinks and reports
    /// every L2 frame, and finally reports the L1 frames with `table_memory_freed`. The
    /// caller must have switched every CPU away from this table; the flush its sink does
    /// then covers any walk-cache entries left. Returns the memory model.
    pub fn destroy<S: UnmapSink + ?Sized>(mut self, sink: &mut S) -> M {
        let (lo, hi) = self.layout.bounds();
        // The bounds are page aligned, so this range always exists; neither call can fail
        // over the whole space (no leaf straddles its bounds).
        if let Ok(all) = VirtRange::new(VirtAddr::new(lo as u32), hi) {
            let _ = self.unmap(all, sink);
            let _ = self.free_tables(all, VirtAddr::new(lo as u32), hi, sink);
        }
        debug_assert_eq!(self.l2_frames, 0);
        sink.table_memory_freed(self.l1_pa, self.l1_frames);
        self.mem
    }

    #[cfg(test)]
    pub(crate) fn l1_words(&self) -> std::vec::Vec<u32> {
        let (lo, hi) = self.layout.bounds();
        ((lo >> 20) as usize..(hi >> 20) as usize)
            .map(|i| self.read_l1(i).raw())
            .collect()
    }

    #[cfg(test)]
    pub(crate) fn l2_words(&self) -> std::vec::Vec<(usize, u32)> {
        let (lo, hi) = self.layout.bounds();
        let mut v = std::vec::Vec::new();
        for i in (lo >> 20) as usize..(hi >> 20) as usize {
            if let L1Kind::Table { pa, .. } = self.l1_kind(i) {
                for k in 0..256 {
                    v.push((i * 256 + k, self.read_l2(pa, k).raw()));
                }
            }
        }
        v
    }

    /// Test hook: a raw pointer to the L1 or L2 entry that translates `va` (for tests
    /// that corrupt a descriptor behind the space's back to show a checker catches it).
    #[doc(hidden)]
    pub fn entry_ptr_for_test(&self, va: VirtAddr) -> Option<NonNull<u32>> {
        let idx = va.l1_index();
        match self.l1_kind(idx) {
            L1Kind::Fault => None,
            L1Kind::Table { pa, .. } => NonNull::new(self.l2_ptr(pa, va.l2_index())),
            _ => NonNull::new(self.l1_ptr(idx)),
        }
    }
}

/// Reports a cleared L1 leaf.
fn report<S: UnmapSink + ?Sized>(sink: &mut S, va: u64, size: MapSize, pa: u64, a: Attributes) {
    sink.leaf_cleared(ClearedLeaf {
        va: VirtAddr::new(va as u32),
        size,
        pa: PhysAddr::new(pa),
        global: a.global,
        executable: a.execute != Execute::Never,
    });
}

/// Iterator over the leaf mappings of a range; see [`AddressSpace::mappings`].
pub struct Mappings<'a, M: Memory> {
    space: &'a AddressSpace<M>,
    next: u64,
    end: u64,
    counts: WalkCounts,
}

impl<M: Memory> Mappings<'_, M> {
    /// Entries read so far.
    #[must_use]
    pub fn counts(&self) -> WalkCounts {
        self.counts
    }
}

impl<M: Memory> Iterator for Mappings<'_, M> {
    type Item = Mapping;
    fn next(&mut self) -> Option<Mapping> {
        let leaf = self
            .space
            .next_leaf(self.next, self.end, &mut self.counts)?;
        self.next = leaf.end();
        Some(leaf.mapping())
    }
}

/// Makes descriptor writes at `p..p+len` visible to a non-coherent table walker.
#[inline]
fn clean_for_walker<T>(features: &Features, p: *const T, len: usize) {
    if !features.coherent_walk {
        #[cfg(target_arch = "arm")]
        crate::arch::mmu::clean_dcache_to_pou(p as usize, len);
        #[cfg(not(target_arch = "arm"))]
        let _ = (p, len);
    }
}

/// Completes descriptor writes for every table walker in the inner shareable domain and
/// resynchronizes this CPU's context.
#[inline]
fn publish(features: &Features) {
    #[cfg(target_arch = "arm")]
    crate::arch::mmu::publish_table_writes(features.coherent_walk);
    #[cfg(not(target_arch = "arm"))]
    let _ = features;
}

#[cfg(feature = "tlb-model")]
mod model_impl {
    use super::*;
    use crate::tlb::model::{Walk, WalkLeaf, WalkSource, WalkTable};

    fn walk_leaf(va: u64, size: MapSize, pa: u64, global: bool) -> Option<WalkLeaf> {
        let base = va & !(size.bytes() - 1);
        Some(WalkLeaf {
            va: VirtAddr::new(base as u32),
            size,
            pa: PhysAddr::new(pa),
            global,
        })
    }

    impl<M: Memory> AddressSpace<M> {
        fn l2_walk(&self, table: u32, va: u64) -> Walk {
            let mut w = Walk {
                tables: [
                    Some(WalkTable {
                        level: 1,
                        span_va: VirtAddr::new((va & !(REGION - 1)) as u32),
                        span: REGION,
                        table: PhysAddr::new(u64::from(table)),
                    }),
                    None,
                ],
                leaf: None,
            };
            w.leaf = match self
                .read_l2(table, ((va >> 12) & 0xff) as usize)
                .kind(false)
            {
                L2Kind::Fault => None,
                L2Kind::Small { pa, attrs } => {
                    walk_leaf(va, MapSize::Page4K, u64::from(pa), attrs.global)
                }
                L2Kind::Large { pa, attrs } => {
                    walk_leaf(va, MapSize::Large64K, u64::from(pa), attrs.global)
                }
            };
            w
        }
    }

    impl<M: Memory> WalkSource for AddressSpace<M> {
        fn walk(&self, va: VirtAddr) -> Walk {
            let (lo, hi) = self.layout.bounds();
            let v = va.as_u64();
            if v < lo || v >= hi {
                return Walk::default();
            }
            match self.l1_kind(va.l1_index()) {
                L1Kind::Fault => Walk::default(),
                L1Kind::Section { pa, attrs } => Walk {
                    tables: [None, None],
                    leaf: walk_leaf(v, MapSize::Section1M, u64::from(pa), attrs.global),
                },
                L1Kind::Supersection { pa, attrs } => Walk {
                    tables: [None, None],
                    leaf: walk_leaf(v, MapSize::Super16M, pa, attrs.global),
                },
                L1Kind::Table { pa, .. } => self.l2_walk(pa, v),
            }
        }

        fn walk_from(&self, level: u8, table: PhysAddr, va: VirtAddr) -> Walk {
            if level != 1 || table.as_u64() >= TOP {
                return Walk::default();
            }
            self.l2_walk(table.as_u64() as u32, va.as_u64())
        }
    }
}

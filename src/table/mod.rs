//! Translation tables, written once for both VMSAv7 descriptor formats.
//!
//! [`AddressSpace<F, M>`] is the one walker: `map`, `translate`, `mappings`, `protect`,
//! `unmap`, `free_tables` and `destroy` are generic over a descriptor [`Format`]. The
//! formats are [`crate::short::Short`] (the classic two-level tables, 32-bit entries) and
//! [`crate::lpae::Lpae`] (long descriptors: three levels, 64-bit entries, 40-bit output
//! addresses). A kernel picks one by the module it takes its `AddressSpace` from:
//! `short::AddressSpace<M>` and `lpae::AddressSpace<M>` are this type with the format
//! filled in.
//!
//! # What is written once, and what each format says
//!
//! | here (format-independent) | in the [`Format`] (per format) |
//! | --- | --- |
//! | range checks, iteration over a range, descending through table entries, skipping an empty entry in one read | descriptor encode/decode: which entries are invalid, tables or leaves, and of which size |
//! | choosing the largest mapping size alignment and the tables allow | the leaf sizes, their level and replication (16 copies for short large pages and supersections) |
//! | the two-phase `map`: plan and check everything, allocate every table frame (all or nothing), then write | levels, entries per table, VA bits per entry ([`Format::SHIFT`], [`Format::ENTRIES`]) |
//! | frame accounting, packing several tables into one frame by group | table size, hence how many tables share a frame (four 1 KiB short L2 tables; one 4 KiB LPAE table) |
//! | `unmap` reporting to the [`crate::UnmapSink`], straddling-block refusal, `protect` | attributes: TEX remap and `AP[2:0]` vs `MAIR` indexes and `AP[2:1]`; what the CPU can encode |
//! | `free_tables` with Linux floor/ceiling semantics, bottom-up over any number of levels | per-table attributes passed down (short: the L2 table's PXN) |
//! | the typed errors of [`crate::error`], the host TLB model's `WalkSource` | the root table for a [`Layout`]; the 32- or 64-bit single-copy-atomic store ([`Word`]) |
//!
//! # Levels
//!
//! Levels are numbered as the architecture does: short descriptors have levels 1 (1 MiB per
//! entry) and 2 (4 KiB); long descriptors 1 (1 GiB), 2 (2 MiB) and 3 (4 KiB). The root table
//! is at level 1 except for long-descriptor tables of 1 GiB or less (`T0SZ >= 2`), whose walk
//! starts at level 2.
//!
//! # Tables and groups
//!
//! A table below the root lives in a 4 KiB frame together with its *group*: the
//! `4 KiB / table size` sibling tables of consecutive parent entries (four for short L2
//! tables, so a group is a 4 MiB-aligned 4 MiB; one for LPAE, so a group is the table's
//! own 2 MiB or 1 GiB). A group's frame is allocated when the first of its tables is needed
//! and freed only by `free_tables`, when all its tables are empty and the whole group lies
//! within `[floor, ceiling)`. Every parent entry of the frame is then cleared and reported
//! with `UnmapSink::table_unlinked(entry VA, entry span, global)`, then the frame with
//! `table_memory_freed(frame, 1)`. Lower levels go first: freeing an LPAE level-2 table
//! needs its level-3 tables freed (and its entries thereby cleared) before.
//!
//! # Break-before-make, failures, partial unmaps
//!
//! These rules are the same for both formats and are documented in [`crate::short`]:
//! no valid entry is written over another; `map` checks and allocates everything before
//! writing, so a failed `map` leaves the tables bit-for-bit as they were and holds no
//! frame; unmapping or protecting part of a block is refused before anything is written,
//! unless asked for with `unmap_split` / `protect_split` (break-before-make through the
//! sink, tables allocated first). `map` never replaces a leaf by a table or a table by a
//! leaf: a region that has an (even empty) table is mapped with smaller leaves until
//! `free_tables` removes the table.

pub mod attrs;
pub mod error;
#[cfg(all(test, feature = "tlb-model"))]
mod hostile_tests;
#[cfg(test)]
mod shareability_tests;
mod space;
#[cfg(all(test, feature = "tlb-model"))]
mod split_tests;
#[cfg(test)]
pub(crate) mod tests;

use core::fmt;

#[cfg(all(test, feature = "tlb-model"))]
pub(crate) use space::store_probe;
pub use space::{AddressSpace, Mappings, BBM_BATCH};

use crate::addr::{PhysAddr, VirtAddr, VirtRange};
use crate::sink::MapSize;
use crate::table::error::{CreateError, Feature};
use attrs::{Access, Attributes, Execute};

const TOP: u64 = 1 << 32;

/// Which part of the 4 GiB VA space a table translates. The first three shapes exist for
/// both formats: `n` is `TTBCR.N` for short descriptors and `TTBCR.T0SZ` (with
/// `T1SZ = 0`) for long descriptors. The last two are the long-descriptor splits made with
/// `TTBCR.T1SZ` instead (`T0SZ = 0`): the kernel's part at the top of the space, sized by
/// `t1sz`, as Linux's LPAE 3G/1G split (`t1sz = 2`). Short descriptors have no `T1SZ`: a
/// short-descriptor space refuses them ([`CreateError::UnsupportedLayout`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Layout {
    /// One table for all 4 GiB (`N = 0` / `T0SZ = T1SZ = 0`, loaded in `TTBR0`). Tables
    /// are treated as possibly holding global entries.
    Whole,
    /// The `TTBR0` half of a split: VAs below `1 << (32 - n)`, `n` in 1..=7. Typically a
    /// process: nG mappings only (`map` refuses a global leaf with
    /// [`MapError::GlobalInUserSpace`](crate::error::MapError::GlobalInUserSpace): its TLB
    /// entry would match every ASID); on short descriptors, tables of never-executable
    /// pages get PXN by default.
    User {
        /// `TTBCR.N` (short) or `TTBCR.T0SZ` (long).
        n: u8,
    },
    /// The `TTBR1` half of a split: VAs from `1 << (32 - n)` up, `n` in 1..=7.
    Kernel {
        /// `TTBCR.N` (short) or `TTBCR.T0SZ` (long).
        n: u8,
    },
    /// Long descriptors: the `TTBR0` part of a `T1SZ` split (`T0SZ = 0`, `T1SZ = t1sz`),
    /// the VAs below `4 GiB - (4 GiB >> t1sz)`, `t1sz` in 1..=7 (below `0xC000_0000` for
    /// `t1sz = 2`). A process, as [`Layout::User`]: not-global leaves only. Its root is
    /// the 4-entry level-1 table of a whole space; the entries above the split stay empty.
    UserLow {
        /// `TTBCR.T1SZ`.
        t1sz: u8,
    },
    /// Long descriptors: the `TTBR1` part of a `T1SZ` split, the top `4 GiB >> t1sz` of
    /// the VA space (from `0xC000_0000` for `t1sz = 2`). For `t1sz >= 2` the walk starts
    /// at level 2: the root is a table of 2 MiB entries and holds no 1 GiB block.
    KernelHigh {
        /// `TTBCR.T1SZ`.
        t1sz: u8,
    },
}

impl Layout {
    /// The VAs this table translates, `[start, end)`. (For an `n` out of range, which
    /// [`AddressSpace::new`](crate::table::AddressSpace::new) refuses, the bounds are
    /// meaningless but computing them does not panic.)
    #[must_use]
    pub const fn bounds(self) -> (u64, u64) {
        const fn split(n: u8) -> u64 {
            match TOP.checked_shr(n as u32) {
                Some(v) => v,
                None => 0,
            }
        }
        match self {
            Layout::Whole => (0, TOP),
            Layout::User { n } => (0, split(n)),
            Layout::Kernel { n } => (split(n), TOP),
            Layout::UserLow { t1sz } => (0, TOP - split(t1sz)),
            Layout::KernelHigh { t1sz } => (TOP - split(t1sz), TOP),
        }
    }

    /// Whether `n` / `t1sz` is in range.
    pub(crate) const fn valid(self) -> bool {
        match self {
            Layout::Whole => true,
            Layout::User { n }
            | Layout::Kernel { n }
            | Layout::UserLow { t1sz: n }
            | Layout::KernelHigh { t1sz: n } => n >= 1 && n <= 7,
        }
    }

    /// Whether this is a process's part of a split ([`Layout::User`] or
    /// [`Layout::UserLow`]): walks from `TTBR0`, tagged with an ASID, so every leaf is
    /// not-global.
    #[must_use]
    pub const fn is_user(self) -> bool {
        matches!(self, Layout::User { .. } | Layout::UserLow { .. })
    }

    /// Whether this is the kernel's part of a split ([`Layout::Kernel`] or
    /// [`Layout::KernelHigh`]): loaded once into `TTBR1`, never switched.
    #[must_use]
    pub const fn is_kernel(self) -> bool {
        matches!(self, Layout::Kernel { .. } | Layout::KernelHigh { .. })
    }

    /// `(TTBCR.N or T0SZ, TTBCR.T1SZ)` of the split this layout belongs to: `(0, 0)` for
    /// [`Layout::Whole`], `(n, 0)` for `User`/`Kernel`, `(0, t1sz)` for the `T1SZ` splits.
    #[must_use]
    pub const fn sizes(self) -> (u8, u8) {
        match self {
            Layout::Whole => (0, 0),
            Layout::User { n } | Layout::Kernel { n } => (n, 0),
            Layout::UserLow { t1sz } | Layout::KernelHigh { t1sz } => (0, t1sz),
        }
    }
}

/// The root table a [`Layout`] needs in a format.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RootShape {
    /// Level of the root table's entries.
    pub level: u8,
    /// Entries of the root table (a power of two).
    pub entries: usize,
    /// 4 KiB frames to allocate for it (1 to 4).
    pub frames: usize,
    /// Alignment of its physical address, in bytes (at least 4096).
    pub align: usize,
}

/// Where and how many times a leaf of one size is stored.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct LeafShape {
    /// The mapping size.
    pub size: MapSize,
    /// The level of its entries.
    pub level: u8,
    /// Identical consecutive entries it occupies (16 for short large pages and
    /// supersections, 1 otherwise).
    pub copies: usize,
}

/// What a descriptor is, as far as the walker needs to know to move on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// Translation fault (including reserved encodings).
    Invalid,
    /// Points at a next-level table.
    Table,
    /// A leaf mapping of this size.
    Leaf(MapSize),
}

/// Only the crate implements [`Word`] and [`Format`]: the two formats implement `Sealed`
/// next to their `Format` impls.
pub(crate) mod sealed {
    pub trait Sealed {}
    impl Sealed for u32 {}
    impl Sealed for u64 {}
}

/// A descriptor as stored in table memory: `u32` (short) or `u64` (long).
///
/// [`Word::store`] is the only way the walker writes a live entry: one single-copy-atomic
/// store, so the hardware walker sees the old or the new descriptor, never a mix. For
/// `u32` that is an aligned word store; for `u64` it is `strd` on the target
/// (`crate::arch::lpae::store_descriptor`), a plain volatile 64-bit store on the host.
pub trait Word: sealed::Sealed + Copy + Eq + fmt::Debug + 'static {
    /// The all-zero (invalid) descriptor.
    const ZERO: Self;
    /// Bytes per descriptor.
    const BYTES: usize;
    /// The low bits of `v`.
    fn from_u64(v: u64) -> Self;
    /// Widened to 64 bits.
    fn to_u64(self) -> u64;
    /// Reads a descriptor.
    ///
    /// # Safety
    /// `p` is an aligned descriptor of a table the caller owns.
    unsafe fn load(p: *const Self) -> Self;
    /// Writes a descriptor with one single-copy-atomic store.
    ///
    /// # Safety
    /// `p` is an aligned descriptor of a table the caller owns and may write.
    unsafe fn store(p: *mut Self, v: Self);
    /// Every descriptor of `words` OR-ed together, without a branch per entry (an
    /// emptiness test of a whole table).
    fn or_all(words: &[Self]) -> u64;
}

macro_rules! or_all {
    ($words:expr) => {{
        let chunks = $words.chunks_exact(8);
        let rest = chunks.remainder().iter().fold(0, |a, w| a | w);
        chunks.fold(rest, |acc, c| {
            acc | c[0] | c[1] | c[2] | c[3] | c[4] | c[5] | c[6] | c[7]
        })
    }};
}

impl Word for u32 {
    const ZERO: Self = 0;
    const BYTES: usize = 4;
    #[inline(always)]
    fn from_u64(v: u64) -> Self {
        v as u32
    }
    #[inline(always)]
    fn to_u64(self) -> u64 {
        u64::from(self)
    }
    #[inline(always)]
    unsafe fn load(p: *const Self) -> Self {
        // SAFETY: the caller passes an aligned descriptor it owns; volatile because the
        // hardware walker shares it.
        unsafe { p.read_volatile() }
    }
    #[inline(always)]
    unsafe fn store(p: *mut Self, v: Self) {
        // SAFETY: as in `load`; an aligned 32-bit store is single-copy atomic.
        unsafe { p.write_volatile(v) }
    }
    #[inline]
    fn or_all(words: &[Self]) -> u64 {
        u64::from(or_all!(words))
    }
}

impl Word for u64 {
    const ZERO: Self = 0;
    const BYTES: usize = 8;
    #[inline(always)]
    fn from_u64(v: u64) -> Self {
        v
    }
    #[inline(always)]
    fn to_u64(self) -> u64 {
        self
    }
    #[inline(always)]
    unsafe fn load(p: *const Self) -> Self {
        // SAFETY: the caller passes an aligned descriptor it owns. Nothing but this crate
        // writes the tables (ARMv7 has no hardware access-flag or dirty updates), and it
        // holds `&mut` of the space when it does, so a read cannot observe a torn value.
        unsafe { p.read_volatile() }
    }
    #[inline(always)]
    unsafe fn store(p: *mut Self, v: Self) {
        #[cfg(target_arch = "arm")]
        // SAFETY: the caller passes an aligned descriptor it owns; `strd` to an 8-byte
        // aligned address is single-copy atomic with LPAE.
        unsafe {
            crate::arch::lpae::store_descriptor(p, v)
        };
        #[cfg(not(target_arch = "arm"))]
        // SAFETY: as above; a host 64-bit store.
        unsafe {
            p.write_volatile(v)
        };
    }
    #[inline]
    fn or_all(words: &[Self]) -> u64 {
        or_all!(words)
    }
}

/// A descriptor format: everything the walker in [`AddressSpace`] needs to know about the
/// bits. Implemented by [`crate::short::Short`] and [`crate::lpae::Lpae`] (sealed).
///
/// Levels are architectural numbers (1 to [`Format::LAST_LEVEL`]); arrays indexed by
/// level have an unused slot 0.
pub trait Format: sealed::Sealed + Sized + 'static {
    /// The descriptor word.
    type Word: Word;
    /// Optional CPU features the format can use (detected from ID registers).
    type Features: Copy + Eq + fmt::Debug;
    /// What a table entry hands down to the entries of its table (short: the L2 table's
    /// PXN bit; nothing for long descriptors).
    type TableCtx: Copy + Eq + fmt::Debug;

    /// The last (page) level.
    const LAST_LEVEL: u8;
    /// By level: `log2` of the VA bytes one entry translates.
    const SHIFT: [u32; 4];
    /// By level: entries of a table at that level (below the root).
    const ENTRIES: [usize; 4];
    /// Leaf sizes, largest first.
    const LEAVES: &'static [LeafShape];
    /// An entry whose bits under this mask are all zero is invalid (the fast test; other
    /// reserved encodings are found by [`Format::kind`]).
    const VALID_MASK: u64;
    /// Table memory must lie below this physical address (what a table entry can hold).
    const TABLE_PA_LIMIT: u64;
    /// The context of the root table's entries.
    const ROOT_CTX: Self::TableCtx;

    /// The root table for `layout` (already checked valid and usable).
    fn root(layout: Layout) -> RootShape;
    /// Whether this format can build a table for `layout` (short descriptors have no
    /// `T1SZ` splits).
    fn layout_usable(layout: Layout) -> bool;
    /// Whether the hardware walker reads table memory coherently with the data cache.
    fn coherent_walk(features: &Self::Features) -> bool;
    /// Whether leaves of `size` may be used on this CPU.
    fn size_usable(features: &Self::Features, size: MapSize) -> bool;
    /// The output addresses a leaf of `size` can reach: `[0, limit)`.
    fn pa_limit(features: &Self::Features, size: MapSize) -> u64;
    /// Whether these permissions can be encoded on this CPU.
    ///
    /// # Errors
    /// The feature they would need.
    fn check_permissions(
        features: &Self::Features,
        access: Access,
        execute: Execute,
    ) -> Result<(), Feature>;
    /// The context of a new table linked for a leaf with `attrs` (short: the L2 table's
    /// PXN, from the execute permission and, for never-executable leaves, from whether
    /// user code can reach them).
    fn new_table_ctx(
        layout: Layout,
        features: &Self::Features,
        attrs: Attributes,
    ) -> Self::TableCtx;
    /// Whether a leaf with `execute` may live in a table with `ctx` (short: the PXN of
    /// the table must agree).
    fn table_allows(ctx: Self::TableCtx, execute: Execute) -> bool;

    /// What the entry `raw` at `level` is.
    fn kind(features: &Self::Features, level: u8, raw: Self::Word) -> Kind;
    /// The physical address of the table a table entry points to.
    fn table_pa(raw: Self::Word) -> u64;
    /// The context a table entry hands down.
    fn table_ctx(raw: Self::Word) -> Self::TableCtx;
    /// The first physical address of a leaf entry of `size`.
    fn leaf_pa(raw: Self::Word, size: MapSize) -> u64;
    /// Whether a leaf entry of `size` is global (nG clear).
    fn leaf_global(raw: Self::Word, size: MapSize) -> bool;
    /// Whether a leaf entry of `size` is executable at some level (XN clear).
    fn leaf_executable(raw: Self::Word, size: MapSize) -> bool;
    /// The attributes of a leaf entry of `size` in a table with `ctx`.
    fn leaf_attrs(raw: Self::Word, size: MapSize, ctx: Self::TableCtx) -> Attributes;
    /// The access permissions of a leaf entry of `size` alone (what [`AddressSpace::lookup`]
    /// decodes): the same as `leaf_attrs(..).access`, without decoding the rest.
    fn leaf_access(raw: Self::Word, size: MapSize) -> Access;
    /// A table entry pointing at the table at `pa`.
    fn encode_table(pa: u64, ctx: Self::TableCtx) -> Self::Word;
    /// A leaf entry (each copy) mapping `size` at `pa` with `attrs`.
    fn encode_leaf(size: MapSize, pa: u64, attrs: Attributes) -> Self::Word;
    /// The output-address bits of a leaf of `size` at `pa`, alone: for every `attrs`,
    /// `encode_leaf(size, pa, attrs) == encode_leaf(size, 0, attrs) | pa_field(size, pa)`
    /// (so `map` computes the attribute bits once per call).
    fn pa_field(size: MapSize, pa: u64) -> Self::Word;

    /// Where leaves of `size` live: the entry of [`Format::LEAVES`], or the smallest.
    #[inline(always)]
    fn shape(size: MapSize) -> LeafShape {
        // The smallest leaf first: the common case, and a constant once inlined.
        let last = Self::LEAVES[Self::LEAVES.len() - 1];
        if size == last.size {
            return last;
        }
        let mut i = 0;
        while i < Self::LEAVES.len() {
            if Self::LEAVES[i].size == size {
                return Self::LEAVES[i];
            }
            i += 1;
        }
        Self::LEAVES[Self::LEAVES.len() - 1]
    }
}

/// A leaf mapping as the tables hold it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Mapping {
    /// First VA (aligned to `size`).
    pub va: VirtAddr,
    /// First PA.
    pub pa: PhysAddr,
    /// Size.
    pub size: MapSize,
    /// Attributes (for short-descriptor pages, `execute` includes the table's PXN).
    pub attrs: Attributes,
}

impl Mapping {
    /// One past the last VA.
    #[must_use]
    pub const fn end(&self) -> u64 {
        self.va.as_u64() + self.size.bytes()
    }
}

/// The result of [`AddressSpace::lookup`]: what a copy to or from user memory, or a
/// fault handler, needs of a translation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Lookup {
    /// The physical address the VA translates to.
    pub pa: PhysAddr,
    /// Who may read and write it.
    pub access: Access,
    /// The size of the leaf holding it (the PA stays valid up to the leaf's end).
    pub size: MapSize,
}

/// The result of [`AddressSpace::translate`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Translation {
    /// The physical address `va` translates to.
    pub pa: PhysAddr,
    /// The leaf mapping holding `va`.
    pub mapping: Mapping,
}

/// What [`AddressSpace::protect`] changed (every leaf of it was reported to the sink,
/// which owes the invalidates).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Changed {
    /// From the first to the end of the last leaf changed.
    pub span: VirtRange,
    /// Leaf mappings changed.
    pub leaves: usize,
    /// Of those, replicated leaves (large pages, supersections) rewritten with
    /// break-before-make.
    pub replicated: usize,
    /// Blocks split because the range cut them (`protect_split`; each cost one
    /// break-before-make flush).
    pub split: usize,
    /// Some changed leaf was global.
    pub global: bool,
    /// Some changed leaf was executable before or after.
    pub executable: bool,
}

/// Entries read by one walk over a range, by level (to check that empty regions cost one
/// read).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct WalkCounts {
    /// Level-1 entries read.
    pub l1_reads: u64,
    /// Level-2 entries read.
    pub l2_reads: u64,
    /// Level-3 entries read (long descriptors only).
    pub l3_reads: u64,
}

impl WalkCounts {
    #[inline(always)]
    fn bump(&mut self, level: u8) {
        match level {
            1 => self.l1_reads += 1,
            2 => self.l2_reads += 1,
            _ => self.l3_reads += 1,
        }
    }
}

/// Checks a layout before a space is created.
pub(crate) fn check_layout<F: Format>(layout: Layout) -> Result<(), CreateError> {
    if !F::layout_usable(layout) {
        return Err(CreateError::UnsupportedLayout(layout));
    }
    match layout {
        Layout::User { n }
        | Layout::Kernel { n }
        | Layout::UserLow { t1sz: n }
        | Layout::KernelHigh { t1sz: n }
            if !layout.valid() =>
        {
            Err(CreateError::InvalidSplit(n))
        }
        _ => Ok(()),
    }
}

//! VMSAv7 long-descriptor translation tables (LPAE, `TTBCR.EAE = 1`), through the same
//! walker as the short format.
//!
//! - [`descriptor`]: the 64-bit entry format;
//! - [`attrs`]: `MAIR0`/`MAIR1` slots and `AP[2:1]` for the shared attribute types;
//! - [`Lpae`]: the [`Format`] the generic walker of [`crate::table`] uses, and
//!   [`Features`];
//! - [`AddressSpace`]: the generic [`crate::table::AddressSpace`] in this format, with the
//!   same operations and errors as [`crate::short::AddressSpace`]; `crate::arch::lpae`
//!   programs the MMU for it and switches to it with an ASID.
//!
//! # Levels
//!
//! | level | entry maps | table | leaf |
//! | --- | --- | --- | --- |
//! | 1 | 1 GiB | 4 entries (32 bytes) for 4 GiB | 1 GiB block |
//! | 2 | 2 MiB | 512 entries, 4 KiB | 2 MiB block |
//! | 3 | 4 KiB | 512 entries, 4 KiB | 4 KiB page |
//!
//! Output addresses are 40 bits in every leaf, and table memory may lie anywhere below
//! 1 TiB ([`MapError::PhysUnreachable`](crate::error::MapError) past that). Each table
//! below the root is one 4 KiB frame (no packing: a level-3 table spans 2 MiB, a level-2
//! table 1 GiB). The root is one frame: a level-1 table for [`Layout::Whole`] and
//! [`Layout::Kernel`] and for [`Layout::User`] with `n = 1`; a level-2 table of
//! `2^(11 - n)` entries for `User { n >= 2 }` (the walk starts at level 2 when `T0SZ >= 2`).
//! Such a space has no 1 GiB blocks: `map` treats a `MapSize::Block1G` limit there as
//! `Block2M`.
//!
//! Table memory for a dense mapping of 4 KiB pages: 1 GiB costs 512 level-3 tables and one
//! level-2 table (2,052 KiB, twice the short format's 1 MiB: the entries are twice as
//! wide), plus the 4 KiB root; 256 MiB costs 129 frames (516 KiB). Blocks need no table
//! below them: 1 GiB of 2 MiB blocks costs one level-2 table, a 1 GiB block nothing.
//!
//! # Layouts, ASIDs
//!
//! The [`Layout`] shapes are the short format's, with `n` meaning `TTBCR.T0SZ` (and
//! `T1SZ = 0`): [`Layout::User`] `{ n }` translates `[0, 2^(32-n))` through `TTBR0`,
//! [`Layout::Kernel`] `{ n }` the rest through `TTBR1` (a level-1 root indexed by
//! `VA[31:30]`). The ASID lives in `TTBR0[55:48]` (`TTBCR.A1 = 0`), so a context switch
//! is one 64-bit `TTBR0` write that changes table and ASID together: no parking step as
//! with short descriptors' `CONTEXTIDR` (see [`crate::arch::switch`]). (`T1SZ > 0`, a TTBR1 region smaller than
//! half the space, is not offered.)
//!
//! # Access flag
//!
//! Every leaf is written with `AF = 1`; the crate never takes access-flag faults. ARMv7
//! CPUs do not set the flag in hardware (`ID_MMFR2.HWAccFlg` is 0 on Cortex-A7/A15), so
//! `AF = 0` would cost a fault and a live descriptor rewrite on the first access to every
//! page, for information (which pages were used) that a kernel wanting it can get by
//! clearing the flag with its own policy later; the crate's job is translation, and an
//! unused-page scanner is not part of it. `SCTLR.AFE` has no say with long descriptors
//! (the flag always exists), so the choice is made here, in [`descriptor::Desc::leaf`].
//!
//! # Single-copy-atomic writes
//!
//! Every live descriptor is written with one 64-bit store (`strd` to its 8-byte-aligned
//! address on the target, `crate::arch::lpae::store_descriptor`), which LPAE makes single-copy
//! atomic: the hardware walker sees the old or the new entry, never half of each. Reads
//! are plain: only this crate writes the tables, under `&mut`.
//!
//! # Flushing what was removed
//!
//! The walker reports to the same [`UnmapSink`](crate::UnmapSink) and the gather needs no
//! change: a 2 MiB or 1 GiB block is one TLB entry and one `leaf_cleared`, hence one
//! by-VA invalidate. A freed level-3 table is reported with
//! `table_unlinked(va, 2 MiB, global)` and a freed level-2 table with a 1 GiB span; one
//! by-VA invalidate anywhere in the span drops the walk-cache entries of the cleared parent
//! entry (the gather adds one only when no pending invalidate lies in the span already).
//! The threshold and the ASID/all fallback work as for the short format.

pub mod attrs;
pub mod descriptor;
#[cfg(test)]
mod tests;

use crate::sink::MapSize;
use crate::table::attrs::{Access, Attributes, Execute};
use crate::table::error::Feature;
pub use crate::table::{Changed, Layout, Lookup, Mapping, Translation, WalkCounts};
use crate::table::{Format, Kind, LeafShape, RootShape};
use descriptor::Desc;

/// The long-descriptor format: three levels of 64-bit entries, 1 GiB and 2 MiB blocks,
/// 4 KiB pages, 40-bit output addresses.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Lpae;

/// A long-descriptor address space (the generic [`crate::table::AddressSpace`] in the
/// [`Lpae`] format).
pub type AddressSpace<M> = crate::table::AddressSpace<Lpae, M>;

/// Iterator over the leaf mappings of a range of a long-descriptor space.
pub type Mappings<'a, M> = crate::table::Mappings<'a, Lpae, M>;

pub use crate::arch::features::lpae::Features;

const PA_LIMIT: u64 = 1 << 40;

impl crate::table::sealed::Sealed for Lpae {}

impl Format for Lpae {
    type Word = u64;
    type Features = Features;
    /// Nothing: the crate leaves the table-level attribute bits zero, and PXN is in every
    /// leaf.
    type TableCtx = ();

    const LAST_LEVEL: u8 = 3;
    const SHIFT: [u32; 4] = [0, 30, 21, 12];
    const ENTRIES: [usize; 4] = [0, 4, 512, 512];
    const LEAVES: &'static [LeafShape] = &[
        LeafShape {
            size: MapSize::Block1G,
            level: 1,
            copies: 1,
        },
        LeafShape {
            size: MapSize::Block2M,
            level: 2,
            copies: 1,
        },
        LeafShape {
            size: MapSize::Page4K,
            level: 3,
            copies: 1,
        },
    ];
    const VALID_MASK: u64 = 1;
    const TABLE_PA_LIMIT: u64 = PA_LIMIT;
    const ROOT_CTX: () = ();

    fn root(layout: Layout) -> RootShape {
        let (level, entries) = match layout {
            // The TTBR1 table of a `T1SZ` split is sized and indexed as a `T0SZ` one of the
            // same size: the walker indexes each table by the VA bits below its region.
            Layout::Whole | Layout::Kernel { .. } | Layout::UserLow { .. } => (1, 4),
            Layout::User { n: 1 } | Layout::KernelHigh { t1sz: 1 } => (1, 2),
            Layout::User { n } | Layout::KernelHigh { t1sz: n } => (2, 1 << (11 - n.min(7))),
        };
        RootShape {
            level,
            entries,
            frames: 1,
            align: 4096,
        }
    }

    fn layout_usable(_: Layout) -> bool {
        true
    }

    #[inline(always)]
    fn coherent_walk(features: &Features) -> bool {
        features.coherent_walk
    }

    fn size_usable(_: &Features, _: MapSize) -> bool {
        true
    }

    fn pa_limit(_: &Features, _: MapSize) -> u64 {
        PA_LIMIT
    }

    fn check_permissions(_: &Features, access: Access, _: Execute) -> Result<(), Feature> {
        if attrs::expressible(access) {
            Ok(())
        } else {
            Err(Feature::ThreeBitAp)
        }
    }

    fn new_table_ctx(_: Layout, _: &Features, _: Attributes) {}

    fn table_allows((): (), _: Execute) -> bool {
        true
    }

    #[inline(always)]
    fn kind(_: &Features, level: u8, raw: u64) -> Kind {
        match (raw & 3, level) {
            (0 | 2, _) => Kind::Invalid,
            (3, 3) => Kind::Leaf(MapSize::Page4K),
            (3, _) => Kind::Table,
            (_, 1) => Kind::Leaf(MapSize::Block1G),
            (_, 2) => Kind::Leaf(MapSize::Block2M),
            _ => Kind::Invalid,
        }
    }

    #[inline(always)]
    fn table_pa(raw: u64) -> u64 {
        raw & Desc::ADDR.bits()
    }

    #[inline(always)]
    fn table_ctx(_: u64) {}

    #[inline(always)]
    fn leaf_pa(raw: u64, size: MapSize) -> u64 {
        Desc::address(size, raw)
    }

    #[inline(always)]
    fn leaf_global(raw: u64, _: MapSize) -> bool {
        raw & Desc::NG.bits() == 0
    }

    #[inline(always)]
    fn leaf_executable(raw: u64, _: MapSize) -> bool {
        raw & Desc::XN.bits() == 0
    }

    #[inline]
    fn leaf_attrs(raw: u64, _: MapSize, (): ()) -> Attributes {
        Desc::from_bits_retain(raw).attrs()
    }

    #[inline(always)]
    fn leaf_access(raw: u64, _: MapSize) -> Access {
        attrs::from_ap21(((raw >> 6) & 3) as u8)
    }

    fn encode_table(pa: u64, (): ()) -> u64 {
        Desc::table(pa).raw()
    }

    fn encode_leaf(size: MapSize, pa: u64, attrs: Attributes) -> u64 {
        Desc::leaf(size, pa, attrs).raw()
    }

    #[inline(always)]
    fn pa_field(size: MapSize, pa: u64) -> u64 {
        Desc::address(size, pa)
    }
}

//! The walker's errors: why a `map`, `unmap`, `protect`, `free_tables` or a read of an
//! address space was refused, and why one could not be created. Each is returned before
//! anything is written (see [`crate::error`] for the crate-wide [`crate::Error`] they all
//! convert into, and the paths they are re-exported at).

use core::fmt;

use super::Layout;
use crate::addr::{PhysAddr, VirtAddr};
use crate::sink::MapSize;

/// An optional CPU feature an operation asked for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Feature {
    /// The PXN bit (privileged execute-never), `ID_MMFR0.VMSA >= 4`.
    Pxn,
    /// 16 MiB supersections (`ID_MMFR3.Supersec == 0`).
    Supersections,
    /// Physical addresses above 4 GiB in supersections (LPAE-capable CPUs).
    Pa40,
    /// Access permissions only the short format's three-bit `AP[2:0]` expresses
    /// ([`Access::None`](crate::table::attrs::Access::None) and
    /// [`Access::KernelRwUserRo`](crate::table::attrs::Access::KernelRwUserRo)); long
    /// descriptors have `AP[2:1]` only.
    ThreeBitAp,
}

/// Why an address space could not be created.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CreateError {
    /// `TTBCR.N` (or `T0SZ`, `T1SZ`) must be 1..=7 for a split layout.
    InvalidSplit(u8),
    /// The format cannot build a table for this layout: the `T1SZ` splits
    /// ([`Layout::UserLow`], [`Layout::KernelHigh`]) are long-descriptor only.
    UnsupportedLayout(Layout),
    /// The kernel's memory model had no frame for the L1 table.
    OutOfMemory,
    /// The allocator returned table memory the translation table base register cannot
    /// point to (short: above 4 GiB; long: above 1 TiB; or not aligned as asked).
    TableUnreachable(PhysAddr),
}

/// Why a `map` was refused. Nothing was written and no frame is held.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MapError {
    /// The physical address is not 4 KiB aligned.
    Misaligned(PhysAddr),
    /// The VA range is not inside the part of the address space this table translates.
    OutOfRange,
    /// The physical range does not fit what the descriptors can encode (short: 32-bit PA,
    /// or 40-bit PA in supersections on CPUs that have it; long: 40-bit PA), or wraps.
    /// The address is that of the first chunk that does not fit.
    PhysUnreachable(PhysAddr),
    /// `va` is already mapped: `map` never writes over a valid entry (break-before-make
    /// is the caller's: unmap, flush, then map).
    AlreadyMapped(VirtAddr),
    /// The 1 MiB region holding `va` already has an L2 table whose PXN bit (one per
    /// table on short descriptors) differs from what these attributes need.
    PxnConflict(VirtAddr),
    /// The attributes need a feature this CPU does not have.
    Unsupported(Feature),
    /// Device or strongly-ordered memory that is not execute-never (`execute` other than
    /// [`Execute::Never`](crate::table::attrs::Execute::Never)): the processor could fetch
    /// instructions from it speculatively, reading device registers (the Arm ARM requires
    /// such regions to be XN, B3.7.2 "Execute-never restrictions on instruction
    /// fetching").
    ExecutableDevice,
    /// A global mapping (`Attributes::global`, nG clear) in a
    /// [`Layout::User`] space: its TLB entry would match every
    /// ASID, so it would leak into every other process and survive their flushes by ASID.
    GlobalInUserSpace,
    /// The kernel's memory model ran out of frames for L2 tables.
    OutOfMemory,
    /// The allocator returned table memory a table entry cannot point to (short: above
    /// 4 GiB; long: above 1 TiB).
    TableUnreachable(PhysAddr),
}

/// Why an `unmap` was refused. Nothing was cleared and nothing was reported.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum UnmapError {
    /// The range is not inside the part of the address space this table translates.
    OutOfRange,
    /// The range cuts the block mapping at `va` of `size` in two. `unmap` does not split
    /// blocks; `unmap_split` does (see [`crate::short`] "Partial unmaps").
    PartialBlock {
        /// First VA of the block.
        va: VirtAddr,
        /// Its size.
        size: MapSize,
    },
    /// A block split (`unmap_split`) needed a table frame the allocator did not give.
    OutOfMemory,
    /// A block split got a table frame a table entry cannot point to (returned).
    TableUnreachable(PhysAddr),
}

/// Why a `protect` was refused. Nothing was changed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ProtectError {
    /// The range is not inside the part of the address space this table translates.
    OutOfRange,
    /// The range cuts the block mapping at `va` in two.
    PartialBlock {
        /// First VA of the block.
        va: VirtAddr,
        /// Its size.
        size: MapSize,
    },
    /// The page mapping at `va` lives in an L2 table whose PXN bit contradicts the new
    /// execute permission.
    PxnConflict(VirtAddr),
    /// The new permissions need a feature this CPU does not have.
    Unsupported(Feature),
    /// The new permissions make the device or strongly-ordered mapping at `va` executable
    /// (see [`MapError::ExecutableDevice`]).
    ExecutableDevice(VirtAddr),
    /// A block split (`protect_split`) needed a table frame the allocator did not give.
    OutOfMemory,
    /// A block split got a table frame a table entry cannot point to (returned).
    TableUnreachable(PhysAddr),
}

/// A read of a VA this table does not translate: the other half of a `TTBCR` split (a
/// `Layout::User` table asked about a kernel VA, or the other way round). Not a
/// translation fault: the other table may well map it. Returned by
/// `translate_checked`, `mappings_checked` and lockless walks.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct OutOfRange {
    /// The VA asked about (for a range, its first VA outside).
    pub va: VirtAddr,
    /// The VAs this table translates, `[start, end)`.
    pub bounds: (u64, u64),
}

/// Why a `free_tables` was refused. Nothing was unlinked.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FreeTablesError {
    /// The range is not inside the part of the address space this table translates.
    OutOfRange,
    /// The bounds do not cover the range (`floor <= range.start`, `range.end <= ceiling`).
    BadBounds,
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Feature::Pxn => "the PXN bit (privileged execute-never)",
            Feature::Supersections => "16 MiB supersections",
            Feature::Pa40 => "physical addresses above 4 GiB in supersections",
            Feature::ThreeBitAp => "the three-bit AP[2:0] access permissions",
        })
    }
}

impl fmt::Display for CreateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CreateError::InvalidSplit(n) => write!(f, "split n = {n} is not in 1..=7"),
            CreateError::UnsupportedLayout(l) => {
                write!(
                    f,
                    "layout {l:?} needs TTBCR.T1SZ, which short descriptors lack"
                )
            }
            CreateError::OutOfMemory => f.write_str("no frame for the root table"),
            CreateError::TableUnreachable(pa) => {
                write!(f, "root table memory at {pa} cannot be a table base")
            }
        }
    }
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapError::Misaligned(pa) => write!(f, "physical address {pa} is not 4 KiB aligned"),
            MapError::OutOfRange => f.write_str("range outside the part this table translates"),
            MapError::PhysUnreachable(pa) => {
                write!(f, "physical address {pa} cannot be encoded in a descriptor")
            }
            MapError::AlreadyMapped(va) => write!(f, "{va} is already mapped"),
            MapError::PxnConflict(va) => {
                write!(f, "the L2 table holding {va} has the other PXN setting")
            }
            MapError::Unsupported(feat) => write!(f, "this CPU lacks {feat}"),
            MapError::ExecutableDevice => {
                f.write_str("device or strongly-ordered memory must be execute-never")
            }
            MapError::GlobalInUserSpace => f.write_str("global mapping in a user address space"),
            MapError::OutOfMemory => f.write_str("no frame for a page table"),
            MapError::TableUnreachable(pa) => {
                write!(
                    f,
                    "table memory at {pa} cannot be pointed to by a table entry"
                )
            }
        }
    }
}

fn partial_block(f: &mut fmt::Formatter<'_>, va: VirtAddr, size: MapSize) -> fmt::Result {
    write!(f, "the range cuts the {size:?} block at {va} in two")
}

impl fmt::Display for UnmapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            UnmapError::OutOfRange => f.write_str("range outside the part this table translates"),
            UnmapError::PartialBlock { va, size } => partial_block(f, va, size),
            UnmapError::OutOfMemory => f.write_str("no memory for the table of a block split"),
            UnmapError::TableUnreachable(pa) => write!(f, "table frame {pa} is unreachable"),
        }
    }
}

impl fmt::Display for ProtectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ProtectError::OutOfRange => f.write_str("range outside the part this table translates"),
            ProtectError::PartialBlock { va, size } => partial_block(f, va, size),
            ProtectError::PxnConflict(va) => {
                write!(f, "the L2 table holding {va} has the other PXN setting")
            }
            ProtectError::Unsupported(feat) => write!(f, "this CPU lacks {feat}"),
            ProtectError::ExecutableDevice(va) => {
                write!(f, "the device mapping at {va} cannot become executable")
            }
            ProtectError::OutOfMemory => f.write_str("no memory for the table of a block split"),
            ProtectError::TableUnreachable(pa) => write!(f, "table frame {pa} is unreachable"),
        }
    }
}

impl fmt::Display for OutOfRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (lo, hi) = self.bounds;
        write!(
            f,
            "{} is outside the VAs this table translates [{lo:#x}, {hi:#x})",
            self.va
        )
    }
}

impl fmt::Display for FreeTablesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FreeTablesError::OutOfRange => "range outside the part this table translates",
            FreeTablesError::BadBounds => "the bounds do not cover the range",
        })
    }
}

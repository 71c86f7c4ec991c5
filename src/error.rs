//! Typed errors of the page-table operations, one enum per operation family.
//!
//! Every error is reported *before* anything is written: an operation that returns `Err`
//! has left the tables exactly as they were and holds no frame it took (see
//! [`crate::short`] for how each operation guarantees that; the same code does it for
//! both descriptor formats, see [`crate::table`]).

use core::fmt;

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
    /// `TTBCR.N` must be 1..=7 for a split layout.
    InvalidSplit(u8),
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
    /// [`Layout::User`](crate::table::Layout::User) space: its TLB entry would match every
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
    /// The range cuts the block mapping at `va` of `size` in two. Blocks are not split
    /// (see [`crate::short`] "Partial unmaps"); unmap the whole block and map back what
    /// should stay.
    PartialBlock {
        /// First VA of the block.
        va: VirtAddr,
        /// Its size.
        size: MapSize,
    },
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
}

/// Why a `free_tables` was refused. Nothing was unlinked.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FreeTablesError {
    /// The range is not inside the part of the address space this table translates.
    OutOfRange,
    /// `floor <= range.start` and `range.end <= ceiling <= 4 GiB` do not hold.
    BadBounds,
}

macro_rules! display_via_debug {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self, f)
            }
        }
    )*};
}
display_via_debug!(
    Feature,
    CreateError,
    MapError,
    UnmapError,
    ProtectError,
    FreeTablesError
);

/// Why switching to an address space was refused. Nothing was changed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ActivateError {
    /// ASID 0 is reserved for the switch sequence itself and never tags a mapping.
    ReservedAsid,
    /// The table base is above 4 GiB or not aligned as the current `TTBCR.N` requires.
    BadTableBase(PhysAddr),
    /// `TTBCR.N` must be 0..=7.
    InvalidSplit(u8),
    /// The CPU walks the other descriptor format (`TTBCR.EAE` set for a short-descriptor
    /// switch, clear for a long-descriptor one).
    FormatMismatch,
    /// Without a split (`TTBCR.N = 0` / `T0SZ = 0`) `TTBR0` is parked on the kernel's table
    /// in `TTBR1` while the ASID changes, and `TTBR1` holds none (base 0): load it first
    /// (`crate::arch::mmu::set_split` with `n = 0` does).
    NoParkingTable,
}

display_via_debug!(ActivateError);

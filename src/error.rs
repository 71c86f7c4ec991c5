//! Typed errors: one precise enum per operation family, and [`Error`], the one crate
//! error every one of them converts into.
//!
//! Every error is reported *before* anything is written: an operation that returns `Err`
//! has left the tables exactly as they were and holds no frame it took (see
//! [`crate::short`] for how each operation guarantees that; the same code does it for
//! both descriptor formats, see [`crate::table`]).
//!
//! A kernel function that runs several operations returns `Result<_, armv7_mm::Error>`
//! and uses `?` on each (every per-operation error has a `From` conversion); a caller that
//! needs the detail matches on the variant, or on the precise error the operation itself
//! returned. All of them implement [`core::fmt::Display`] and [`core::error::Error`].
//!
//! ```
//! use armv7_mm::short::{AddressSpace, Attributes, Features, Layout};
//! use armv7_mm::{MapSize, Memory, PhysAddr, VirtAddr, VirtRange};
//!
//! fn map_one<M: Memory>(space: &mut AddressSpace<M>, va: u32, pa: u64) -> Result<(), armv7_mm::Error> {
//!     let range = VirtRange::from_start_len(VirtAddr::new(va), 4096)?; // RangeError
//!     space.map(range, PhysAddr::new(pa), Attributes::USER_DATA, MapSize::Page4K)?; // MapError
//!     Ok(())
//! }
//! ```

use core::fmt;

use crate::addr::{PhysAddr, RangeError, VirtAddr};
use crate::asid::SwitchError;
use crate::locked::{LocklessError, ZapError};
use crate::lockless::WalkError;
use crate::sink::MapSize;
use crate::tlb::errata::ErrataError;
use crate::tlb::select::{BroadcastUnavailable, DetectError, JoinError};

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
    /// The bounds do not cover the range (`floor <= range.start`, `range.end <= ceiling`).
    BadBounds,
}

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
    /// The table was built for another split than the one the CPU runs: `table` is the
    /// `n` of its layout (0 for a whole-VA-space table), `ttbcr` the live `TTBCR.N` (short
    /// descriptors) or `TTBCR.T0SZ` (LPAE). Loading it would walk it with the wrong index
    /// width (a wrong translation, or a root the CPU cannot use).
    SplitMismatch {
        /// The split the table's layout was built for.
        table: u8,
        /// The split the CPU's `TTBCR` holds.
        ttbcr: u8,
    },
    /// The table is for the other translation table base register: a kernel-half table
    /// (`Layout::Kernel`, loaded once into `TTBR1`) given to a context switch, or a
    /// process table (`Layout::User`) given to the MMU bring-up as the kernel's.
    WrongHalf,
    /// `SCTLR.AFE` is set: `AP[0]` is then an access flag, and the crate's access
    /// permissions (written for `AFE = 0`) would mean something else (a kernel-only
    /// read/write page user-visible once its access flag is set). The bring-up programs
    /// `AFE = 0`; an activation refuses a CPU that runs with it set.
    AccessFlagEnabled,
    /// The MMU bring-up was asked for with the MMU already on (`SCTLR.M = 1`): it programs
    /// every translation register from scratch, which is only safe with translation off.
    MmuAlreadyOn,
    /// A long-descriptor bring-up on a CPU without LPAE (`ID_MMFR0.VMSA < 5`).
    NoLpae,
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
        }
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

impl fmt::Display for ActivateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ActivateError::ReservedAsid => f.write_str("ASID 0 is reserved"),
            ActivateError::BadTableBase(pa) => {
                write!(f, "{pa} cannot be a table base with the current TTBCR")
            }
            ActivateError::InvalidSplit(n) => write!(f, "split n = {n} is not in 0..=7"),
            ActivateError::FormatMismatch => {
                f.write_str("the table's descriptor format is not the one TTBCR.EAE selects")
            }
            ActivateError::NoParkingTable => {
                f.write_str("TTBCR.N = 0 and TTBR1 holds no kernel table to park TTBR0 on")
            }
            ActivateError::SplitMismatch { table, ttbcr } => write!(
                f,
                "the table was built for split n = {table}, the CPU runs n = {ttbcr}"
            ),
            ActivateError::WrongHalf => {
                f.write_str("the table is for the other translation table base register")
            }
            ActivateError::AccessFlagEnabled => {
                f.write_str("SCTLR.AFE is set; the crate's permissions assume AFE = 0")
            }
            ActivateError::MmuAlreadyOn => f.write_str("the MMU is already on"),
            ActivateError::NoLpae => f.write_str("this CPU has no LPAE"),
        }
    }
}

impl fmt::Display for RangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RangeError::Misaligned => "range start or end not 4 KiB aligned",
            RangeError::Invalid => "range ends before it starts, or past 4 GiB",
        })
    }
}

impl fmt::Display for SwitchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SwitchError::NoSuchCpu(cpu) => write!(f, "no CPU {cpu} in the ASID allocator"),
            SwitchError::Activate(e) => write!(f, "switch refused: {e}"),
            SwitchError::NotTtbr0 => f.write_str("a kernel-layout space is not a TTBR0 table"),
        }
    }
}

impl fmt::Display for ZapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ZapError::ForeignGather => f.write_str("the gather belongs to another address space"),
            ZapError::Unmap(e) => write!(f, "unmap refused: {e}"),
            ZapError::FreeTables(e) => write!(f, "free_tables refused: {e}"),
            ZapError::Protect(e) => write!(f, "protect refused: {e}"),
        }
    }
}

impl fmt::Display for WalkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalkError::NoSuchCpu(cpu) => write!(f, "no CPU {cpu} in the walk epochs"),
            WalkError::Nested(cpu) => write!(f, "CPU {cpu} is already in a walk section"),
        }
    }
}

impl fmt::Display for LocklessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LocklessError::NotSynced => {
                f.write_str("no walk epochs attached: table frees would not wait for this walk")
            }
        }
    }
}

/// Every error of the crate, for kernels that propagate them with `?` (each
/// per-operation error converts into it with `From`). The variant says which operation
/// refused; the wrapped error why, and is also its [`core::error::Error::source`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Error {
    /// Creating an address space.
    Create(CreateError),
    /// A `map`.
    Map(MapError),
    /// An `unmap`.
    Unmap(UnmapError),
    /// A `protect`.
    Protect(ProtectError),
    /// A `free_tables`.
    FreeTables(FreeTablesError),
    /// An activation, a context switch or the MMU bring-up.
    Activate(ActivateError),
    /// Building a [`VirtRange`](crate::addr::VirtRange).
    Range(RangeError),
    /// The ASID allocator's switch.
    Switch(SwitchError),
    /// A zap through a locked address space.
    Zap(ZapError),
    /// Entering a lockless walk section.
    Walk(WalkError),
    /// A lockless walk of a locked address space.
    Lockless(LocklessError),
    /// Building an errata configuration.
    Errata(ErrataError),
    /// Choosing a TLB backend for this CPU (`Cp15Tlb::detect`).
    Detect(DetectError),
    /// Broadcast TLB maintenance is not effective on this CPU.
    Broadcast(BroadcastUnavailable),
    /// Setting this CPU's `ACTLR` coherency bits.
    Join(JoinError),
}

macro_rules! into_crate_error {
    ($($variant:ident($t:ty)),* $(,)?) => {
        $(
            impl From<$t> for Error {
                fn from(e: $t) -> Self {
                    Error::$variant(e)
                }
            }
            impl core::error::Error for $t {}
        )*

        impl fmt::Display for Error {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $(Error::$variant(e) => fmt::Display::fmt(e, f),)*
                }
            }
        }

        impl core::error::Error for Error {
            fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
                match self {
                    $(Error::$variant(e) => Some(e),)*
                }
            }
        }
    };
}

into_crate_error!(
    Create(CreateError),
    Map(MapError),
    Unmap(UnmapError),
    Protect(ProtectError),
    FreeTables(FreeTablesError),
    Activate(ActivateError),
    Range(RangeError),
    Switch(SwitchError),
    Zap(ZapError),
    Walk(WalkError),
    Lockless(LocklessError),
    Errata(ErrataError),
    Detect(DetectError),
    Broadcast(BroadcastUnavailable),
    Join(JoinError),
);

impl core::error::Error for Feature {}

#[cfg(test)]
mod tests {
    use std::format;
    use std::string::ToString;

    use super::*;
    use crate::gather::{InFlight, MmuGather, Scope};
    use crate::short::host::HostMemory;
    use crate::short::{AddressSpace, Attributes, Features, Layout};
    use crate::tlb::armv7::Recorder;
    use crate::tlb::{Armv7Tlb, Shareability};
    use crate::{Asid, PhysAddr, VirtAddr, VirtRange};

    /// A kernel's mmap/munmap written as a kernel would: one error type, `?` everywhere.
    fn mmap_then_munmap(va: u32, len: u64, pa: u64, split: u8) -> Result<u64, crate::Error> {
        let mem = HostMemory::new();
        let mut space = AddressSpace::new(mem.clone(), Layout::User { n: split }, Features::ALL)?;
        let range = VirtRange::from_start_len(VirtAddr::new(va), len)?;
        space.map(
            range,
            PhysAddr::new(pa),
            Attributes::USER_DATA,
            MapSize::Page4K,
        )?;
        let in_flight = InFlight::new();
        let mut tlb = Armv7Tlb::new(Recorder::default(), Shareability::Local);
        let mut gather = MmuGather::new(Scope::Asid(Asid(1)), &mut tlb, mem, &in_flight);
        space.unmap(range, &mut gather)?;
        space.free_tables(range, range, &mut gather)?;
        let report = gather.finish();
        Ok(u64::from(report.leaves_cleared))
    }

    #[test]
    fn question_mark_works_in_a_kernel_function() {
        assert!(mmap_then_munmap(0x1000_0000, 0x4000, 0x8000_0000, 2).is_ok());
        // Each failing step comes back as its own variant, with the precise error inside.
        assert_eq!(
            mmap_then_munmap(0x1000_0000, 0x4000, 0x8000_0000, 9),
            Err(Error::Create(CreateError::InvalidSplit(9)))
        );
        assert_eq!(
            mmap_then_munmap(0x1000_0800, 0x4000, 0x8000_0000, 2),
            Err(Error::Range(RangeError::Misaligned))
        );
        assert_eq!(
            mmap_then_munmap(0x1000_0000, 0x4000, 0x8000_0010, 2),
            Err(Error::Map(MapError::Misaligned(PhysAddr::new(0x8000_0010))))
        );
        assert_eq!(
            mmap_then_munmap(0x7000_0000, 0x4000, 0x8000_0000, 2),
            Err(Error::Map(MapError::OutOfRange))
        );
    }

    #[test]
    fn every_error_displays_and_has_a_source() {
        let all: [Error; 12] = [
            CreateError::OutOfMemory.into(),
            MapError::AlreadyMapped(VirtAddr::new(0x1000)).into(),
            UnmapError::OutOfRange.into(),
            ProtectError::Unsupported(Feature::Pxn).into(),
            FreeTablesError::BadBounds.into(),
            ActivateError::SplitMismatch { table: 2, ttbcr: 1 }.into(),
            RangeError::Invalid.into(),
            SwitchError::Activate(ActivateError::WrongHalf).into(),
            ZapError::Unmap(UnmapError::OutOfRange).into(),
            WalkError::Nested(1).into(),
            LocklessError::NotSynced.into(),
            ErrataError::IpiHookRequired.into(),
        ];
        for e in all {
            let text = e.to_string();
            assert!(!text.is_empty() && !text.contains("Error"), "{e:?}: {text}");
            let source = core::error::Error::source(&e).expect("the wrapped error");
            assert_eq!(source.to_string(), text);
        }
        assert_eq!(
            ActivateError::SplitMismatch { table: 2, ttbcr: 1 }.to_string(),
            "the table was built for split n = 2, the CPU runs n = 1"
        );
        assert!(format!("{}", Error::from(MapError::Unsupported(Feature::Pxn))).contains("PXN"));
    }
}

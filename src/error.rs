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

pub use crate::arch::error::ActivateError;
pub use crate::table::error::{
    CreateError, Feature, FreeTablesError, MapError, OutOfRange, ProtectError, UnmapError,
};

use crate::addr::RangeError;
use crate::asid::SwitchError;
use crate::locked::{LocklessError, ZapError};
use crate::lockless::WalkError;
use crate::tlb::errata::ErrataError;
use crate::tlb::select::{BroadcastUnavailable, DetectError, JoinError};

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
            LocklessError::OutOfRange(e) => fmt::Display::fmt(e, f),
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
    /// A checked read of a VA in the other half of a split.
    Read(OutOfRange),
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
    Read(OutOfRange),
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
    use crate::{Asid, MapSize, PhysAddr, VirtAddr, VirtRange};

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

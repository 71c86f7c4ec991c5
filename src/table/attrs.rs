//! Mapping attributes as a kernel writer thinks of them, shared by both descriptor formats.
//!
//! Each format translates these types to its own bits, in one place: TEX remap (`PRRR`/
//! `NMRR`) and the three-bit `AP` field in [`crate::short::attrs`], `MAIR` indexes and
//! `AP[2:1]` in [`crate::lpae::attrs`]. The memory type is an *attribute index* in both
//! (`TEX[0]:C:B` under TEX remap, `AttrIndx` with `MAIR`), and both formats' registers
//! describe the same type in the same slot, so [`MemoryType::remap_index`] serves both.

pub use crate::arch::memattr::MemoryType;

/// Who may read and write a mapping.
///
/// Long descriptors have only `AP[2:1]`: [`Access::None`] and [`Access::KernelRwUserRo`]
/// exist only in the short format (a long-descriptor `map` or `protect` refuses them with
/// [`crate::error::Feature::ThreeBitAp`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Access {
    /// No access at any level (short `AP = 0b000`; a reserved `AP = 0b100` also decodes to
    /// this).
    None,
    /// Kernel read/write, no user access.
    KernelRw,
    /// Kernel read-only, no user access.
    KernelRo,
    /// Kernel read/write, user read-only (short descriptors only).
    KernelRwUserRo,
    /// Read/write at every level.
    UserRw,
    /// Read-only at every level.
    UserRo,
}

impl Access {
    /// The short-descriptor `AP[2:0]`.
    #[must_use]
    pub const fn ap(self) -> u8 {
        match self {
            Access::None => 0b000,
            Access::KernelRw => 0b001,
            Access::KernelRwUserRo => 0b010,
            Access::UserRw => 0b011,
            Access::KernelRo => 0b101,
            Access::UserRo => 0b111,
        }
    }

    /// Decodes a short-descriptor `AP[2:0]` as the hardware does with `SCTLR.AFE = 0`.
    #[must_use]
    pub const fn from_ap(ap: u8) -> Self {
        match ap & 7 {
            0b001 => Access::KernelRw,
            0b010 => Access::KernelRwUserRo,
            0b011 => Access::UserRw,
            0b101 => Access::KernelRo,
            0b110 | 0b111 => Access::UserRo,
            _ => Access::None,
        }
    }

    /// Whether an access is permitted: `user` for PL0 (else PL1), `write` for a store.
    #[must_use]
    pub const fn allows(self, user: bool, write: bool) -> bool {
        match (self, user, write) {
            (Access::None, _, _) => false,
            (Access::KernelRw, false, _) => true,
            (Access::KernelRw, true, _) => false,
            (Access::KernelRo, false, false) => true,
            (Access::KernelRo, _, _) => false,
            (Access::KernelRwUserRo, false, _) => true,
            (Access::KernelRwUserRo, true, w) => !w,
            (Access::UserRw, _, _) => true,
            (Access::UserRo, _, w) => !w,
        }
    }
}

/// Who may execute from a mapping.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Execute {
    /// Nobody (`XN = 1`).
    Never,
    /// Any level the access permissions allow to read (`XN = 0`, `PXN = 0`).
    Anywhere,
    /// Only PL0 (`XN = 0`, `PXN = 1`; needs [`crate::error::Feature::Pxn`] on short
    /// descriptors). For short-descriptor 4 KiB and 64 KiB pages PXN is a bit of the L2
    /// *table*, shared by the whole 1 MiB region; long descriptors have it in every entry.
    UserOnly,
}

/// Everything a leaf mapping says besides its output address and size.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Attributes {
    /// Memory type (attribute index).
    pub memory: MemoryType,
    /// Read/write permissions per level.
    pub access: Access,
    /// Execute permission. [`Execute::Never`] for device and strongly-ordered memory:
    /// `map` and `protect` refuse anything else there (the processor could fetch
    /// instructions from device registers speculatively).
    pub execute: Execute,
    /// Global (`nG = 0`): the TLB entry matches every ASID. Kernel mappings are global;
    /// user mappings are not (tagged with the ASID current at the walk), and a
    /// [`Layout::User`](crate::table::Layout::User) space refuses global ones.
    pub global: bool,
    /// Shareable, for Normal memory; device and strongly-ordered memory are always
    /// shareable.
    pub shareable: bool,
}

impl Attributes {
    /// Kernel data: write-back RAM, kernel read/write, never executable, global, shareable.
    pub const KERNEL_DATA: Attributes = Attributes {
        memory: MemoryType::NormalWriteBack,
        access: Access::KernelRw,
        execute: Execute::Never,
        global: true,
        shareable: true,
    };
    /// Kernel image: write-back RAM, kernel read/write, executable, global, shareable (a
    /// simple identity map of a kernel whose text and data share sections).
    pub const KERNEL_IMAGE: Attributes = Attributes {
        execute: Execute::Anywhere,
        ..Self::KERNEL_DATA
    };
    /// Device registers: device memory, kernel read/write, never executable, global (for a
    /// [`Layout::User`](crate::table::Layout::User) space, the same with `global: false`).
    pub const DEVICE: Attributes = Attributes {
        memory: MemoryType::Device,
        access: Access::KernelRw,
        execute: Execute::Never,
        global: true,
        shareable: true,
    };
    /// User data: write-back RAM, read/write at every level, never executable, not global.
    pub const USER_DATA: Attributes = Attributes {
        memory: MemoryType::NormalWriteBack,
        access: Access::UserRw,
        execute: Execute::Never,
        global: false,
        shareable: true,
    };

    /// The same attributes with other permissions (what `protect` may change).
    #[must_use]
    pub const fn with_permissions(self, access: Access, execute: Execute) -> Self {
        Attributes {
            access,
            execute,
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_roundtrip_and_legacy_meaning() {
        use MemoryType::*;
        for t in [
            StronglyOrdered,
            Device,
            NormalNonCacheable,
            NormalWriteThrough,
            NormalWriteBackNoAllocate,
            NormalWriteBack,
        ] {
            assert_eq!(MemoryType::from_remap_index(t.remap_index()), t);
        }
        // TEX=000 C=0 B=0 strongly-ordered, TEX=000 C=0 B=1 device, TEX=000 C=1 B=0 WT,
        // TEX=000 C=1 B=1 WB no-WA, TEX=001 C=0 B=0 NC, TEX=001 C=1 B=1 WB-WA.
        assert_eq!(StronglyOrdered.remap_index(), 0b000);
        assert_eq!(Device.remap_index(), 0b001);
        assert_eq!(NormalWriteThrough.remap_index(), 0b010);
        assert_eq!(NormalWriteBackNoAllocate.remap_index(), 0b011);
        assert_eq!(NormalNonCacheable.remap_index(), 0b100);
        assert_eq!(NormalWriteBack.remap_index(), 0b111);
    }

    #[test]
    fn access_roundtrip_and_table() {
        use Access::*;
        for a in [None, KernelRw, KernelRo, KernelRwUserRo, UserRw, UserRo] {
            assert_eq!(Access::from_ap(a.ap()), a);
        }
        // (pl1 read, pl1 write, pl0 read, pl0 write)
        let table = [
            (None, [false, false, false, false]),
            (KernelRw, [true, true, false, false]),
            (KernelRo, [true, false, false, false]),
            (KernelRwUserRo, [true, true, true, false]),
            (UserRw, [true, true, true, true]),
            (UserRo, [true, false, true, false]),
        ];
        for (a, want) in table {
            let got = [
                a.allows(false, false),
                a.allows(false, true),
                a.allows(true, false),
                a.allows(true, true),
            ];
            assert_eq!(got, want, "{a:?}");
        }
    }
}

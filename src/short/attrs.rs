//! Mapping attributes as a kernel writer thinks of them, and their one translation to
//! short-descriptor bits.
//!
//! # TEX remap (`SCTLR.TRE = 1`)
//!
//! The crate uses TEX remap: the memory type of every leaf is a 3-bit index
//! `TEX[0]:C:B` into eight slots that [`PRRR`] and [`NMRR`] describe. Why remap rather than
//! the fixed TEX/C/B table:
//!
//! - one index field, the same three bits in sections, supersections, large and small
//!   pages, instead of a five-bit TEX/C/B code whose meaning depends on `TEX[2]`;
//! - cacheability and shareability of each type are set once in two registers (the inner
//!   and outer policies, and `NOS` for inner- versus outer-shareable), so a kernel can retune
//!   a type without rewriting any table;
//! - `TEX[2:1]` become free for the OS (the crate leaves them zero).
//!
//! The slots are chosen so that each index means under remap exactly what the same
//! `TEX[0]:C:B` bits mean with remap off (`TEX[2:1] = 0`): 0 strongly-ordered, 1 shareable
//! device, 2 write-through no write-allocate, 3 write-back no write-allocate, 4 normal
//! non-cacheable, 7 write-back write-allocate. Slots 5 and 6 (reserved and
//! IMPLEMENTATION DEFINED in the fixed table) are never produced and are programmed as
//! strongly-ordered. So turning `TRE` on over a boot map written with plain TEX/C/B
//! (such as the test runtime's) changes the meaning of none of its entries.
//!
//! Normal memory with `S = 1` is shareable (`PRRR.NS1 = 1`, `NS0 = 0`) and outer
//! shareable (`NOSn = 0`), again as without remap; device memory is shareable whatever
//! `S` says (`DS0 = DS1 = 1`).
//!
//! # Access permissions
//!
//! `SCTLR.AFE = 0`: `AP[2:0]` is the full three-bit permission field and there are no
//! access-flag faults. Every mapping uses domain 0, which the kernel sets to *client* in
//! `DACR` (permissions checked).

use crate::sink::MapSize;

/// The memory type of a mapping.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum MemoryType {
    /// Strongly-ordered: every access in program order, no gathering, always shareable.
    StronglyOrdered,
    /// Device memory (shareable).
    Device,
    /// Normal memory, inner and outer non-cacheable.
    NormalNonCacheable,
    /// Normal memory, inner and outer write-through, no write-allocate.
    NormalWriteThrough,
    /// Normal memory, inner and outer write-back, no write-allocate.
    NormalWriteBackNoAllocate,
    /// Normal memory, inner and outer write-back write-allocate (ordinary RAM).
    NormalWriteBack,
}

impl MemoryType {
    /// The TEX-remap index `TEX[0]:C:B` for this type.
    #[must_use]
    pub const fn remap_index(self) -> u8 {
        match self {
            MemoryType::StronglyOrdered => 0,
            MemoryType::Device => 1,
            MemoryType::NormalWriteThrough => 2,
            MemoryType::NormalWriteBackNoAllocate => 3,
            MemoryType::NormalNonCacheable => 4,
            MemoryType::NormalWriteBack => 7,
        }
    }

    /// The type a remap index selects with this crate's [`PRRR`]/[`NMRR`] (slots 5 and 6
    /// are strongly-ordered).
    #[must_use]
    pub const fn from_remap_index(index: u8) -> Self {
        match index & 7 {
            1 => MemoryType::Device,
            2 => MemoryType::NormalWriteThrough,
            3 => MemoryType::NormalWriteBackNoAllocate,
            4 => MemoryType::NormalNonCacheable,
            7 => MemoryType::NormalWriteBack,
            _ => MemoryType::StronglyOrdered,
        }
    }

    /// Whether this is Normal memory (cacheability and shareability apply).
    #[must_use]
    pub const fn is_normal(self) -> bool {
        !matches!(self, MemoryType::StronglyOrdered | MemoryType::Device)
    }

    /// `PRRR.TRn` value: 0 strongly-ordered, 1 device, 2 normal.
    const fn prrr_tr(self) -> u32 {
        match self {
            MemoryType::StronglyOrdered => 0,
            MemoryType::Device => 1,
            _ => 2,
        }
    }

    /// `NMRR.IRn`/`ORn` value: 0 non-cacheable, 1 WB-WA, 2 WT, 3 WB no-WA.
    const fn nmrr_policy(self) -> u32 {
        match self {
            MemoryType::NormalWriteBack => 1,
            MemoryType::NormalWriteThrough => 2,
            MemoryType::NormalWriteBackNoAllocate => 3,
            _ => 0,
        }
    }
}

const fn compute_prrr() -> u32 {
    let mut v = 0;
    let mut i = 0;
    while i < 8 {
        v |= MemoryType::from_remap_index(i).prrr_tr() << (2 * i as u32);
        i += 1;
    }
    // DS0 = DS1 = 1: device is shareable whatever S says. NS0 = 0, NS1 = 1: normal memory
    // is shareable iff S. NOSn = 0: shareable normal memory is outer shareable.
    v | (1 << 16) | (1 << 17) | (1 << 19)
}

const fn compute_nmrr() -> u32 {
    let mut v = 0;
    let mut i = 0;
    while i < 8 {
        let p = MemoryType::from_remap_index(i).nmrr_policy();
        v |= (p << (2 * i as u32)) | (p << (16 + 2 * i as u32));
        i += 1;
    }
    v
}

/// The value the kernel must program in `PRRR` (Primary Region Remap Register) before
/// setting `SCTLR.TRE` for tables built by this crate (`0x000b_82a4`).
pub const PRRR: u32 = compute_prrr();
/// The value the kernel must program in `NMRR` (Normal Memory Remap Register) before
/// setting `SCTLR.TRE` (`0x40e0_40e0`).
pub const NMRR: u32 = compute_nmrr();

/// Who may read and write a mapping.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Access {
    /// No access at any level (`AP = 0b000`); a reserved `AP = 0b100` also decodes to this.
    None,
    /// Kernel read/write, no user access (`AP = 0b001`).
    KernelRw,
    /// Kernel read-only, no user access (`AP = 0b101`).
    KernelRo,
    /// Kernel read/write, user read-only (`AP = 0b010`).
    KernelRwUserRo,
    /// Read/write at every level (`AP = 0b011`).
    UserRw,
    /// Read-only at every level (`AP = 0b111`; the deprecated `0b110` decodes to this too).
    UserRo,
}

impl Access {
    /// `AP[2:0]`.
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

    /// Decodes `AP[2:0]` as the hardware does with `SCTLR.AFE = 0`.
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
    /// Only PL0 (`XN = 0`, `PXN = 1`; needs [`crate::error::Feature::Pxn`]). For 4 KiB and
    /// 64 KiB pages PXN is a bit of the L2 *table*, shared by the whole 1 MiB region.
    UserOnly,
}

/// Everything a leaf mapping says besides its output address and size.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Attributes {
    /// Memory type (TEX-remap index).
    pub memory: MemoryType,
    /// Read/write permissions per level.
    pub access: Access,
    /// Execute permission.
    pub execute: Execute,
    /// Global (`nG = 0`): the TLB entry matches every ASID. Kernel mappings are global;
    /// user mappings are not (tagged with the ASID current at the walk).
    pub global: bool,
    /// Shareable (`S`), for Normal memory; device and strongly-ordered memory are always
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
    /// Device registers: device memory, kernel read/write, never executable, global.
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

    /// The bits these attributes put in a descriptor.
    pub(crate) const fn raw(self) -> RawAttrs {
        RawAttrs {
            index: self.memory.remap_index(),
            ap: self.access.ap(),
            s: self.shareable,
            ng: !self.global,
            xn: matches!(self.execute, Execute::Never),
            pxn: matches!(self.execute, Execute::UserOnly),
        }
    }

    /// What a descriptor's bits mean. `pxn` is the PXN bit that applies (the section's
    /// own, or the L2 table's for pages).
    pub(crate) const fn from_raw(raw: RawAttrs) -> Self {
        Attributes {
            memory: MemoryType::from_remap_index(raw.index),
            access: Access::from_ap(raw.ap),
            execute: if raw.xn {
                Execute::Never
            } else if raw.pxn {
                Execute::UserOnly
            } else {
                Execute::Anywhere
            },
            global: !raw.ng,
            shareable: raw.s,
        }
    }
}

/// Attribute bits common to every leaf format, before they are placed in a descriptor.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(crate) struct RawAttrs {
    /// `TEX[0]:C:B`.
    pub index: u8,
    /// `AP[2:0]`.
    pub ap: u8,
    /// `S`.
    pub s: bool,
    /// `nG`.
    pub ng: bool,
    /// `XN`.
    pub xn: bool,
    /// `PXN` (sections/supersections; the table's bit for pages).
    pub pxn: bool,
}

/// The largest mapping size at most `max`, for short descriptors (2 MiB and 1 GiB LPAE
/// blocks count as 1 MiB and 16 MiB).
pub(crate) const fn short_size_at_most(max: MapSize) -> MapSize {
    match max {
        MapSize::Page4K => MapSize::Page4K,
        MapSize::Large64K => MapSize::Large64K,
        MapSize::Section1M | MapSize::Block2M => MapSize::Section1M,
        MapSize::Super16M | MapSize::Block1G => MapSize::Super16M,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remap_registers() {
        assert_eq!(PRRR, 0x000b_82a4);
        assert_eq!(NMRR, 0x40e0_40e0);
    }

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

    #[test]
    fn raw_roundtrip() {
        for exec in [Execute::Never, Execute::Anywhere, Execute::UserOnly] {
            for global in [false, true] {
                let a = Attributes {
                    execute: exec,
                    global,
                    ..Attributes::USER_DATA
                };
                assert_eq!(Attributes::from_raw(a.raw()), a);
            }
        }
    }
}

//! The long-descriptor (LPAE) entry format: one 64-bit word per entry at every level.
//!
//! ```text
//!  63      59 58   55 54 53 52 51  40 39                 12 11 10 9  8 7  6 5  4    2 1 0
//!  table:  NST APT XNT PXNT   ignored     next-level table address[39:12]    ignored   1 1
//!  block:  ignored | sw | XN | PXN | Contig | res0 | output address[39:n] | nG AF SH AP NS AttrIndx 0 1
//!  page:   same as a block, at level 3, with type bits 1 1 (level-3 `0 1` is reserved)
//! ```
//!
//! `n` is 30 for a level-1 block (1 GiB), 21 for a level-2 block (2 MiB), 12 for a page.
//! Bit 0 clear is a fault at every level. The crate leaves the table-level attribute
//! bits (`NSTable`, `APTable`, `XNTable`, `PXNTable`) and `Contiguous` zero, and sets `AF`
//! in every leaf (see [`crate::lpae`] "Access flag").

use core::fmt;

use bitflags::bitflags;

use super::attrs::{ap21, from_ap21};
use crate::sink::MapSize;
use crate::table::attrs::{Attributes, Execute, MemoryType};

bitflags! {
    /// A long descriptor.
    #[derive(Clone, Copy, PartialEq, Eq, Hash)]
    #[repr(transparent)]
    pub struct Desc: u64 {
        /// Valid (bit 0 clear: translation fault).
        const VALID = 1 << 0;
        /// Table (levels 1 and 2) or page (level 3); clear for a block.
        const TABLE_OR_PAGE = 1 << 1;
        /// `AttrIndx[2:0]`: the `MAIR` slot of the memory type.
        const ATTR_INDX = 0b111 << 2;
        /// Non-secure.
        const NS = 1 << 5;
        /// `AP[1]`: PL0 access as well.
        const AP1 = 1 << 6;
        /// `AP[2]`: read-only.
        const AP2 = 1 << 7;
        /// `SH[1:0]`: 0b00 non-shareable, 0b10 outer, 0b11 inner shareable.
        const SH = 0b11 << 8;
        /// Access flag.
        const AF = 1 << 10;
        /// Not global.
        const NG = 1 << 11;
        /// Output address / next-level table address bits \[39:12\].
        const ADDR = 0xff_ffff_f000;
        /// Contiguous hint (unused by the crate).
        const CONTIG = 1 << 52;
        /// Privileged execute-never.
        const PXN = 1 << 53;
        /// Execute-never.
        const XN = 1 << 54;
        /// Table: PXN for everything below (unused by the crate).
        const PXN_TABLE = 1 << 59;
        /// Table: XN for everything below (unused by the crate).
        const XN_TABLE = 1 << 60;
        /// Table: access-permission limits below (unused by the crate).
        const AP_TABLE = 0b11 << 61;
        /// Table: non-secure table.
        const NS_TABLE = 1 << 63;
        /// Everything else.
        const _ = !0;
    }
}

/// `SH` for shareable memory: inner shareable (`0b11`), as the short format's `S` bit means
/// with the crate's `PRRR` (`NOSn = 1`), and the domain of the walks (`TTBCR.SH0 = 0b11`),
/// barriers and TLB broadcasts. Linux's `L_PTE_SHARED` is the same `3 << 8`.
const SH_INNER: u64 = 0b11 << 8;
/// `SH[1]`: set for both shareable encodings (`0b10` outer, `0b11` inner), clear for
/// non-shareable (`0b00`; `0b01` is reserved).
const SH_SHAREABLE: u64 = 0b10 << 8;

/// What a long descriptor is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DescKind {
    /// Translation fault (bit 0 clear, or the reserved level-3 `0b01`).
    Fault,
    /// Points at a next-level table.
    Table {
        /// Physical address of the 4 KiB table.
        pa: u64,
    },
    /// A block (levels 1, 2) or page (level 3).
    Leaf {
        /// 1 GiB, 2 MiB or 4 KiB.
        size: MapSize,
        /// Output address (up to 40 bits).
        pa: u64,
        /// Attributes.
        attrs: Attributes,
    },
}

impl Desc {
    /// The fault (invalid) entry.
    pub const FAULT: Desc = Desc::empty();

    /// A table entry pointing at the 4 KiB table at `pa` (bits below 4 KiB and above 40
    /// ignored).
    #[must_use]
    pub const fn table(pa: u64) -> Self {
        Desc::from_bits_retain((pa & Desc::ADDR.bits()) | 0b11)
    }

    /// The output-address bits of a leaf of `size` at `pa` (bits below `size` and above
    /// 40 ignored).
    #[must_use]
    pub const fn address(size: MapSize, pa: u64) -> u64 {
        pa & Desc::ADDR.bits() & !(size.bytes() - 1)
    }

    /// A leaf mapping `size` (1 GiB, 2 MiB: block; anything else: page) at `pa`, with the
    /// access flag set.
    #[must_use]
    pub fn leaf(size: MapSize, pa: u64, attrs: Attributes) -> Self {
        let ty = match size {
            MapSize::Block1G | MapSize::Block2M => 0b01,
            _ => 0b11,
        };
        let mut d = Desc::from_bits_retain(Self::address(size, pa) | ty) | Desc::AF;
        d |= Desc::from_bits_retain(u64::from(attrs.memory.remap_index()) << 2);
        d |= Desc::from_bits_retain(u64::from(ap21(attrs.access)) << 6);
        if attrs.shareable {
            d |= Desc::from_bits_retain(SH_INNER);
        }
        d.set(Desc::NG, !attrs.global);
        let (xn, pxn) = match attrs.execute {
            Execute::Never => (true, true),
            Execute::Anywhere => (false, false),
            Execute::UserOnly => (false, true),
        };
        d.set(Desc::XN, xn);
        d.set(Desc::PXN, pxn);
        d
    }

    /// The raw word.
    #[must_use]
    pub const fn raw(self) -> u64 {
        self.bits()
    }

    /// The attributes of a leaf entry.
    #[must_use]
    pub fn attrs(self) -> Attributes {
        let b = self.bits();
        Attributes {
            memory: MemoryType::from_remap_index(((b >> 2) & 7) as u8),
            access: from_ap21(((b >> 6) & 3) as u8),
            execute: if self.contains(Desc::XN) {
                Execute::Never
            } else if self.contains(Desc::PXN) {
                Execute::UserOnly
            } else {
                Execute::Anywhere
            },
            global: !self.contains(Desc::NG),
            shareable: b & SH_SHAREABLE != 0,
        }
    }

    /// Decodes an entry found at `level` (1 to 3).
    #[must_use]
    #[inline]
    pub fn kind(self, level: u8) -> DescKind {
        let b = self.bits();
        if b & 1 == 0 {
            return DescKind::Fault;
        }
        let size = match (level, b & 2 != 0) {
            (1 | 2, true) => {
                return DescKind::Table {
                    pa: b & Desc::ADDR.bits(),
                }
            }
            (3, false) => return DescKind::Fault,
            (1, false) => MapSize::Block1G,
            (2, false) => MapSize::Block2M,
            _ => MapSize::Page4K,
        };
        DescKind::Leaf {
            size,
            pa: Self::address(size, b),
            attrs: self.attrs(),
        }
    }
}

impl fmt::Debug for Desc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Desc({:#018x})", self.bits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::attrs::Access;

    #[test]
    fn known_encodings() {
        // Kernel RW write-back page at 0x12_3456_7000: AttrIndx 7, AP 00, inner
        // shareable, AF, XN + PXN, type 0b11.
        let d = Desc::leaf(MapSize::Page4K, 0x12_3456_7000, Attributes::KERNEL_DATA);
        assert_eq!(
            d.raw(),
            0x12_3456_7000 | 0b11 | 7 << 2 | 0b11 << 8 | 1 << 10 | 1 << 53 | 1 << 54
        );
        // User RW device 2 MiB block, nG: AttrIndx 1, AP 01, type 0b01.
        let a = Attributes {
            access: Access::UserRw,
            global: false,
            ..Attributes::DEVICE
        };
        let d = Desc::leaf(MapSize::Block2M, 0x8020_0000, a);
        assert_eq!(
            d.raw(),
            0x8020_0000 | 0b01 | 1 << 2 | 1 << 6 | 0b11 << 8 | 1 << 10 | 1 << 11 | 3 << 53
        );
        // 1 GiB block ignores the address bits below 1 GiB.
        let d = Desc::leaf(MapSize::Block1G, 0xc0_4000_1000, Attributes::KERNEL_IMAGE);
        assert_eq!(d.raw() & Desc::ADDR.bits(), 0xc0_4000_0000);
        assert_eq!(Desc::table(0x1_2345_6789).raw(), 0x1_2345_6000 | 0b11);
    }

    #[test]
    fn leaf_roundtrip_and_levels() {
        for (level, size) in [
            (1, MapSize::Block1G),
            (2, MapSize::Block2M),
            (3, MapSize::Page4K),
        ] {
            let d = Desc::leaf(size, 0xab_c000_0000, Attributes::USER_DATA);
            assert_eq!(
                d.kind(level),
                DescKind::Leaf {
                    size,
                    pa: 0xab_c000_0000,
                    attrs: Attributes::USER_DATA
                }
            );
        }
        assert_eq!(
            Desc::table(0x4000_1000).kind(2),
            DescKind::Table { pa: 0x4000_1000 }
        );
        // Level 3 has no tables and no blocks: `0b01` is reserved and faults.
        let block = Desc::leaf(MapSize::Block2M, 0x20_0000, Attributes::KERNEL_DATA);
        assert_eq!(block.kind(3), DescKind::Fault);
        assert_eq!(Desc::FAULT.kind(1), DescKind::Fault);
        assert_eq!(Desc::from_bits_retain(!1).kind(2), DescKind::Fault);
    }
}

//! VMSAv7 short-descriptor formats: first-level (L1) and second-level (L2) entries.
//!
//! ```text
//! L1 (one word per 1 MiB; 4096 words = 16 KiB when TTBCR.N = 0)
//!   fault         ...............................................00
//!   page table    [31:10] L2 base | IMP | domain[8:5] | 0 | NS | PXN | 01
//!   section       [31:20] base | NS | 0 | nG | S | AP2 | TEX[14:12] | AP[11:10] | IMP
//!                 | domain[8:5] | XN | C | B | 1 | PXN
//!   supersection  [31:24] base | [23:20] PA[35:32] | NS | 1 | nG | S | AP2 | TEX | AP
//!                 | IMP | [8:5] PA[39:36] | XN | C | B | 1 | PXN   (16 identical entries)
//! L2 (one word per 4 KiB; 256 words = 1 KiB)
//!   fault         ...............................................00
//!   large page    [31:16] base | XN | TEX[14:12] | nG | S | AP2 | 000 | AP[5:4] | C | B | 01
//!                 (16 identical entries)
//!   small page    [31:12] base | nG | S | AP2 | TEX[8:6] | AP[5:4] | C | B | 1 | XN
//! ```
//!
//! The walker builds and reads entries only through these types.

use core::fmt;

use bitflags::bitflags;

use super::attrs::{Attributes, RawAttrs};

bitflags! {
    /// A first-level short descriptor.
    #[derive(Clone, Copy, PartialEq, Eq, Hash)]
    #[repr(transparent)]
    pub struct L1Desc: u32 {
        /// Type bit 0: page table (with bit 1 clear), or PXN of a section (bit 1 set).
        const TYPE0 = 1 << 0;
        /// Type bit 1: section or supersection.
        const TYPE1 = 1 << 1;
        /// Page table: PXN for every page of the table.
        const TABLE_PXN = 1 << 2;
        /// Page table: non-secure table.
        const TABLE_NS = 1 << 3;
        /// Section: `B` (remap index bit 0).
        const B = 1 << 2;
        /// Section: `C` (remap index bit 1).
        const C = 1 << 3;
        /// Section: execute-never.
        const XN = 1 << 4;
        /// Domain (page table, section); `PA[39:36]` in a supersection.
        const DOMAIN = 0xf << 5;
        /// IMPLEMENTATION DEFINED.
        const IMP = 1 << 9;
        /// Section: `AP[0]`.
        const AP0 = 1 << 10;
        /// Section: `AP[1]`.
        const AP1 = 1 << 11;
        /// Section: `TEX[0]` (remap index bit 2).
        const TEX0 = 1 << 12;
        /// Section: `TEX[2:1]` (free for the OS under TEX remap; kept zero).
        const TEX_OS = 0b11 << 13;
        /// Section: `AP[2]`.
        const AP2 = 1 << 15;
        /// Section: shareable.
        const S = 1 << 16;
        /// Section: not global (ASID-tagged).
        const NG = 1 << 17;
        /// Supersection (with TYPE1).
        const SUPER = 1 << 18;
        /// Section: non-secure.
        const NS = 1 << 19;
        /// Address bits.
        const _ = !0;
    }
}

bitflags! {
    /// A second-level short descriptor.
    #[derive(Clone, Copy, PartialEq, Eq, Hash)]
    #[repr(transparent)]
    pub struct L2Desc: u32 {
        /// Large page (type `01`); for a small page, execute-never.
        const TYPE0 = 1 << 0;
        /// Small page (type `1x`).
        const SMALL = 1 << 1;
        /// `B` (remap index bit 0).
        const B = 1 << 2;
        /// `C` (remap index bit 1).
        const C = 1 << 3;
        /// `AP[0]`.
        const AP0 = 1 << 4;
        /// `AP[1]`.
        const AP1 = 1 << 5;
        /// Small page: `TEX[0]` (remap index bit 2).
        const SMALL_TEX0 = 1 << 6;
        /// `AP[2]`.
        const AP2 = 1 << 9;
        /// Shareable.
        const S = 1 << 10;
        /// Not global.
        const NG = 1 << 11;
        /// Large page: `TEX[0]` (remap index bit 2).
        const LARGE_TEX0 = 1 << 12;
        /// Large page: execute-never.
        const LARGE_XN = 1 << 15;
        /// Address bits.
        const _ = !0;
    }
}

/// What an L1 entry is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum L1Kind {
    /// Translation fault (including the reserved `0b11` type on CPUs without PXN).
    Fault,
    /// Points at an L2 table.
    Table {
        /// Physical address of the 1 KiB table.
        pa: u32,
        /// PXN for the whole table.
        pxn: bool,
    },
    /// A 1 MiB section.
    Section {
        /// Output address.
        pa: u32,
        /// Attributes.
        attrs: Attributes,
    },
    /// One of the 16 entries of a 16 MiB supersection.
    Supersection {
        /// Output address (up to 40 bits).
        pa: u64,
        /// Attributes.
        attrs: Attributes,
    },
}

/// What an L2 entry is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum L2Kind {
    /// Translation fault.
    Fault,
    /// One of the 16 entries of a 64 KiB large page.
    Large {
        /// Output address of the large page.
        pa: u32,
        /// Attributes, with the PXN of the table that held the entry.
        attrs: Attributes,
    },
    /// A 4 KiB small page.
    Small {
        /// Output address.
        pa: u32,
        /// Attributes, with the PXN of the table that held the entry.
        attrs: Attributes,
    },
}

/// Common memory-attribute bits in L1 section positions.
fn l1_attr_bits(r: RawAttrs) -> L1Desc {
    let mut d = L1Desc::empty();
    d.set(L1Desc::B, r.index & 1 != 0);
    d.set(L1Desc::C, r.index & 2 != 0);
    d.set(L1Desc::TEX0, r.index & 4 != 0);
    d.set(L1Desc::AP0, r.ap & 1 != 0);
    d.set(L1Desc::AP1, r.ap & 2 != 0);
    d.set(L1Desc::AP2, r.ap & 4 != 0);
    d.set(L1Desc::XN, r.xn);
    d.set(L1Desc::TYPE0, r.pxn);
    d.set(L1Desc::S, r.s);
    d.set(L1Desc::NG, r.ng);
    d
}

impl L1Desc {
    /// The fault (invalid) entry.
    pub const FAULT: L1Desc = L1Desc::empty();

    /// A page-table entry pointing at the 1 KiB-aligned L2 table `table_pa` (domain 0).
    /// Address bits below 1 KiB are ignored.
    #[must_use]
    pub fn table(table_pa: u32, pxn: bool) -> Self {
        let mut d = L1Desc::from_bits_retain(table_pa & 0xffff_fc00) | L1Desc::TYPE0;
        d.set(L1Desc::TABLE_PXN, pxn);
        d
    }

    /// A section mapping the 1 MiB at `pa` (bits below 1 MiB ignored), domain 0.
    #[must_use]
    pub fn section(pa: u32, attrs: Attributes) -> Self {
        L1Desc::from_bits_retain(pa & 0xfff0_0000) | L1Desc::TYPE1 | l1_attr_bits(attrs.raw())
    }

    /// One of the 16 entries of a supersection mapping the 16 MiB at `pa` (bits below
    /// 16 MiB and above 40 bits ignored).
    #[must_use]
    pub fn supersection(pa: u64, attrs: Attributes) -> Self {
        L1Desc::from_bits_retain(Self::supersection_base(pa))
            | L1Desc::TYPE1
            | L1Desc::SUPER
            | l1_attr_bits(attrs.raw())
    }

    /// The address bits of a supersection at `pa`: `PA[31:24]` in place, `PA[35:32]` at
    /// bits \[23:20\], `PA[39:36]` at bits \[8:5\].
    #[must_use]
    pub const fn supersection_base(pa: u64) -> u32 {
        let lo = (pa as u32) & 0xff00_0000;
        let pa35_32 = ((pa >> 32) as u32 & 0xf) << 20;
        let pa39_36 = ((pa >> 36) as u32 & 0xf) << 5;
        lo | pa35_32 | pa39_36
    }

    /// The output address of a supersection entry (up to 40 bits).
    #[must_use]
    pub const fn supersection_pa(raw: u32) -> u64 {
        let b = raw as u64;
        (b & 0xff00_0000) | ((b >> 20) & 0xf) << 32 | ((b >> 5) & 0xf) << 36
    }

    /// The raw word.
    #[must_use]
    pub const fn raw(self) -> u32 {
        self.bits()
    }

    /// Whether the entry is a fault entry (type `00`).
    #[must_use]
    pub const fn is_fault(self) -> bool {
        self.bits() & 3 == 0
    }

    /// Decodes the entry. `pxn_supported` tells whether type `0b11` is a section with PXN
    /// (CPUs with the PXN bit) or a reserved encoding that faults.
    #[must_use]
    #[inline]
    pub fn kind(self, pxn_supported: bool) -> L1Kind {
        match self.bits() & 3 {
            0b00 => L1Kind::Fault,
            0b01 => L1Kind::Table {
                pa: self.bits() & 0xffff_fc00,
                pxn: self.contains(L1Desc::TABLE_PXN),
            },
            0b11 if !pxn_supported => L1Kind::Fault,
            _ => {
                let raw = RawAttrs {
                    index: (self.contains(L1Desc::B) as u8)
                        | (self.contains(L1Desc::C) as u8) << 1
                        | (self.contains(L1Desc::TEX0) as u8) << 2,
                    ap: (self.contains(L1Desc::AP0) as u8)
                        | (self.contains(L1Desc::AP1) as u8) << 1
                        | (self.contains(L1Desc::AP2) as u8) << 2,
                    s: self.contains(L1Desc::S),
                    ng: self.contains(L1Desc::NG),
                    xn: self.contains(L1Desc::XN),
                    pxn: self.contains(L1Desc::TYPE0),
                };
                let attrs = Attributes::from_raw(raw);
                if self.contains(L1Desc::SUPER) {
                    let pa = Self::supersection_pa(self.bits());
                    L1Kind::Supersection { pa, attrs }
                } else {
                    L1Kind::Section {
                        pa: self.bits() & 0xfff0_0000,
                        attrs,
                    }
                }
            }
        }
    }
}

impl L2Desc {
    /// The fault (invalid) entry.
    pub const FAULT: L2Desc = L2Desc::empty();

    /// A small-page entry mapping the 4 KiB at `pa` (bits below 4 KiB ignored). The PXN
    /// of `attrs` is not encoded: it belongs to the table.
    #[must_use]
    pub fn small(pa: u32, attrs: Attributes) -> Self {
        let r = attrs.raw();
        let mut d = L2Desc::from_bits_retain(pa & 0xffff_f000) | L2Desc::SMALL;
        d.set(L2Desc::TYPE0, r.xn);
        d.set(L2Desc::SMALL_TEX0, r.index & 4 != 0);
        d | Self::common(r)
    }

    /// One of the 16 entries of a large page mapping the 64 KiB at `pa` (bits below
    /// 64 KiB ignored). The PXN of `attrs` is not encoded: it belongs to the table.
    #[must_use]
    pub fn large(pa: u32, attrs: Attributes) -> Self {
        let r = attrs.raw();
        let mut d = L2Desc::from_bits_retain(pa & 0xffff_0000) | L2Desc::TYPE0;
        d.set(L2Desc::LARGE_XN, r.xn);
        d.set(L2Desc::LARGE_TEX0, r.index & 4 != 0);
        d | Self::common(r)
    }

    fn common(r: RawAttrs) -> Self {
        let mut d = L2Desc::empty();
        d.set(L2Desc::B, r.index & 1 != 0);
        d.set(L2Desc::C, r.index & 2 != 0);
        d.set(L2Desc::AP0, r.ap & 1 != 0);
        d.set(L2Desc::AP1, r.ap & 2 != 0);
        d.set(L2Desc::AP2, r.ap & 4 != 0);
        d.set(L2Desc::S, r.s);
        d.set(L2Desc::NG, r.ng);
        d
    }

    /// The raw word.
    #[must_use]
    pub const fn raw(self) -> u32 {
        self.bits()
    }

    /// Whether the entry is a fault entry (type `00`).
    #[must_use]
    pub const fn is_fault(self) -> bool {
        self.bits() & 3 == 0
    }

    /// Decodes the entry; `table_pxn` is the PXN bit of the L1 entry that points at the
    /// table holding it.
    #[must_use]
    #[inline]
    pub fn kind(self, table_pxn: bool) -> L2Kind {
        let b = self.bits();
        if b & 3 == 0 {
            return L2Kind::Fault;
        }
        let small = self.contains(L2Desc::SMALL);
        let tex0 = if small {
            self.contains(L2Desc::SMALL_TEX0)
        } else {
            self.contains(L2Desc::LARGE_TEX0)
        };
        let raw = RawAttrs {
            index: (self.contains(L2Desc::B) as u8)
                | (self.contains(L2Desc::C) as u8) << 1
                | (tex0 as u8) << 2,
            ap: (self.contains(L2Desc::AP0) as u8)
                | (self.contains(L2Desc::AP1) as u8) << 1
                | (self.contains(L2Desc::AP2) as u8) << 2,
            s: self.contains(L2Desc::S),
            ng: self.contains(L2Desc::NG),
            xn: if small {
                self.contains(L2Desc::TYPE0)
            } else {
                self.contains(L2Desc::LARGE_XN)
            },
            pxn: table_pxn,
        };
        let attrs = Attributes::from_raw(raw);
        if small {
            L2Kind::Small {
                pa: b & 0xffff_f000,
                attrs,
            }
        } else {
            L2Kind::Large {
                pa: b & 0xffff_0000,
                attrs,
            }
        }
    }
}

impl fmt::Debug for L1Desc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "L1Desc({:#010x})", self.bits())
    }
}

impl fmt::Debug for L2Desc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "L2Desc({:#010x})", self.bits())
    }
}

#[cfg(test)]
mod tests {
    use super::super::attrs::{Access, Execute, MemoryType};
    use super::*;

    fn all_attrs() -> impl Iterator<Item = Attributes> {
        let mems = MemoryType::ALL;
        let accs = [
            Access::None,
            Access::KernelRw,
            Access::KernelRo,
            Access::KernelRwUserRo,
            Access::UserRw,
            Access::UserRo,
        ];
        let execs = [Execute::Never, Execute::Anywhere, Execute::UserOnly];
        mems.into_iter().flat_map(move |memory| {
            accs.into_iter().flat_map(move |access| {
                execs.into_iter().flat_map(move |execute| {
                    [(false, false), (false, true), (true, false), (true, true)]
                        .into_iter()
                        .map(move |(global, shareable)| Attributes {
                            memory,
                            access,
                            execute,
                            global,
                            shareable,
                        })
                })
            })
        })
    }

    #[test]
    fn known_encodings() {
        // Kernel RW write-back section at 0x4010_0000: TEX=001 C=1 B=1 AP=001 S XN.
        let d = L1Desc::section(0x4010_0000, Attributes::KERNEL_DATA);
        assert_eq!(
            d.raw(),
            0x4010_0000 | 0b10 | 0b1100 | 1 << 4 | 1 << 10 | 1 << 12 | 1 << 16
        );
        // Device small page: C=0 B=1, AP=001, S, XN.
        let d = L2Desc::small(0x0900_0000, Attributes::DEVICE);
        assert_eq!(d.raw(), 0x0900_0000 | 0b11 | 1 << 2 | 1 << 4 | 1 << 10);
        // User RW large page, nG, XN, TEX0 at bit 12.
        let d = L2Desc::large(0x1234_0000, Attributes::USER_DATA);
        assert_eq!(
            d.raw(),
            0x1234_0000 | 0b01 | 0b1100 | 0b11 << 4 | 1 << 10 | 1 << 11 | 1 << 12 | 1 << 15
        );
        // Supersection at 40-bit PA 0xab_c500_0000.
        let d = L1Desc::supersection(0xab_c500_0000, Attributes::KERNEL_IMAGE);
        assert_eq!(d.raw() & 0xff00_0000, 0xc500_0000);
        assert_eq!((d.raw() >> 20) & 0xf, 0xb);
        assert_eq!((d.raw() >> 5) & 0xf, 0xa);
        assert!(d.contains(L1Desc::SUPER));
        assert_eq!(L1Desc::table(0x4000_0c00, true).raw(), 0x4000_0c00 | 0b101);
    }

    #[test]
    fn leaf_roundtrip_every_attribute() {
        for a in all_attrs() {
            match L1Desc::section(0x8070_0000, a).kind(true) {
                L1Kind::Section { pa, attrs } => {
                    assert_eq!(pa, 0x8070_0000);
                    assert_eq!(attrs, a);
                }
                k => panic!("{k:?}"),
            }
            match L1Desc::supersection(0x3_2100_0000, a).kind(true) {
                L1Kind::Supersection { pa, attrs } => {
                    assert_eq!(pa, 0x3_2100_0000);
                    assert_eq!(attrs, a);
                }
                k => panic!("{k:?}"),
            }
            let table_pxn = matches!(a.execute, Execute::UserOnly);
            match L2Desc::small(0xfedc_b000, a).kind(table_pxn) {
                L2Kind::Small { pa, attrs } => {
                    assert_eq!(pa, 0xfedc_b000);
                    assert_eq!(attrs, a);
                }
                k => panic!("{k:?}"),
            }
            match L2Desc::large(0xfedc_0000, a).kind(table_pxn) {
                L2Kind::Large { pa, attrs } => {
                    assert_eq!(pa, 0xfedc_0000);
                    assert_eq!(attrs, a);
                }
                k => panic!("{k:?}"),
            }
        }
    }

    #[test]
    fn faults_and_reserved() {
        assert_eq!(L1Desc::FAULT.kind(true), L1Kind::Fault);
        assert_eq!(L2Desc::FAULT.kind(false), L2Kind::Fault);
        let pxn_section = L1Desc::section(
            0x100000,
            Attributes {
                execute: Execute::UserOnly,
                ..Attributes::USER_DATA
            },
        );
        assert_eq!(pxn_section.raw() & 3, 3);
        assert_eq!(pxn_section.kind(false), L1Kind::Fault);
        assert!(matches!(
            L1Desc::table(0x1000, false).kind(false),
            L1Kind::Table {
                pa: 0x1000,
                pxn: false
            }
        ));
    }
}

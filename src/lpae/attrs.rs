//! The long-descriptor translation of the mapping attributes: `MAIR0`/`MAIR1` slots for
//! the memory types and `AP[2:1]` for the permissions.
//!
//! # Memory types (`MAIR0`, `MAIR1`)
//!
//! A leaf's `AttrIndx[2:0]` selects one of eight attribute bytes in `MAIR0` (slots 0 to 3)
//! and `MAIR1` (slots 4 to 7). The crate uses the same slot numbers as its TEX-remap
//! index ([`MemoryType::remap_index`]), and each slot means what the same slot means in
//! [`crate::short::attrs::PRRR`]/[`crate::short::attrs::NMRR`]: 0 strongly-ordered
//! (`0x00`), 1 device (`0x04`), 2 write-through read-allocate no write-allocate (`0xaa`),
//! 3 write-back read-allocate no write-allocate (`0xee`), 4 non-cacheable (`0x44`),
//! 7 write-back read/write-allocate (`0xff`), inner and outer alike; 5 and 6 are never
//! produced and are strongly-ordered. So the same [`Attributes`] give the same memory
//! whichever format a kernel picks. With `TTBCR.EAE = 1` the `MAIRn` registers are the
//! registers that hold `PRRR`/`NMRR` in the short format.
//!
//! Shareable Normal memory is inner shareable (`SH = 0b11`), as `S = 1` means with the
//! crate's `PRRR` (`NOSn = 1`), and the domain the walks use (`TTBCR.SH0 = SH1 = 0b11`
//! from `crate::arch::lpae::enable`), the crate's barriers (`dsb ish`) and its TLB
//! broadcasts. Linux's `L_PTE_SHARED` is the same `0b11`. Non-shareable is `0b00`; a
//! leaf with `SH = 0b10` (outer shareable, never written by the crate) reads back as
//! shareable. Device and strongly-ordered memory are shareable whatever `SH` says (the
//! crate writes `0b11` for them too when [`Attributes::shareable`] is set).
//!
//! # Permissions
//!
//! `AP[2:1]`: `00` kernel RW, `01` RW at every level, `10` kernel RO, `11` RO at every
//! level. The short format's "no access" and "kernel RW, user RO" do not exist here and
//! are refused with [`crate::error::Feature::ThreeBitAp`].

pub use crate::table::attrs::{Access, Attributes, Execute, MemoryType};

pub use crate::arch::memattr::{MAIR0, MAIR1};

/// `AP[2:1]` for `access`; 0 (kernel RW) for the two the format cannot express (which
/// `map`/`protect` refuse before encoding).
pub(crate) const fn ap21(access: Access) -> u8 {
    match access {
        Access::UserRw => 0b01,
        Access::KernelRo => 0b10,
        Access::UserRo => 0b11,
        _ => 0b00,
    }
}

/// The permissions `AP[2:1]` grants.
pub(crate) const fn from_ap21(ap: u8) -> Access {
    match ap & 3 {
        0b00 => Access::KernelRw,
        0b01 => Access::UserRw,
        0b10 => Access::KernelRo,
        _ => Access::UserRo,
    }
}

/// Whether the format can express `access`.
#[must_use]
pub const fn expressible(access: Access) -> bool {
    !matches!(access, Access::None | Access::KernelRwUserRo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mair_values() {
        assert_eq!(MAIR0, 0xeeaa_0400);
        assert_eq!(MAIR1, 0xff00_0044);
    }

    #[test]
    fn ap_roundtrip_and_meaning() {
        for a in [
            Access::KernelRw,
            Access::UserRw,
            Access::KernelRo,
            Access::UserRo,
        ] {
            assert!(expressible(a));
            assert_eq!(from_ap21(ap21(a)), a);
        }
        assert!(!expressible(Access::None) && !expressible(Access::KernelRwUserRo));
        // AP[2] is read-only, AP[1] is PL0 access: the same meaning allows() gives.
        for ap in 0..4u8 {
            let a = from_ap21(ap);
            assert_eq!(a.allows(true, false), ap & 1 != 0, "{a:?}");
            assert_eq!(a.allows(false, true), ap & 2 == 0, "{a:?}");
        }
    }
}

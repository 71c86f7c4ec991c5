//! The short-descriptor translation of the mapping attributes (the types themselves are
//! shared by both formats, in [`crate::table::attrs`], and re-exported here).
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
//! Normal memory with `S = 1` is shareable (`PRRR.NS1 = 1`, `NS0 = 0`), as without remap,
//! and *inner* shareable (`NOSn = 1` for the Normal slots): the domain the table walks
//! use (`TTBR.S = 1`, `NOS = 1` from `crate::arch::mmu::ttbr_value` on CPUs with the
//! multiprocessing extensions), the domain of the crate's barriers (`dsb ish`) and of its
//! TLB broadcasts (`TLBI*IS`). Linux makes the same choice. Device memory is shareable
//! whatever `S` says (`DS0 = DS1 = 1`).
//!
//! That is the one thing `TRE = 1` changes for a plain TEX/C/B boot map: a descriptor
//! without remap has no inner/outer choice, and its shareable Normal entries are outer
//! shareable; under the crate's `PRRR` they are inner shareable. For the CPUs of one inner
//! shareable domain, which is all the crate's barriers and TLB maintenance reach anyway,
//! that changes nothing; an observer that is only in the outer shareable domain (a
//! coherent DMA master outside the cluster, say) is no longer covered.
//!
//! # Access permissions
//!
//! `SCTLR.AFE = 0`: `AP[2:0]` is the full three-bit permission field and there are no
//! access-flag faults. Every mapping uses domain 0, which the kernel sets to *client* in
//! `DACR` (permissions checked).

pub use crate::table::attrs::{Access, Attributes, Execute, MemoryType};

pub use crate::arch::memattr::{NMRR, PRRR};

impl Attributes {
    /// The short-descriptor bits these attributes put in a descriptor.
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

    /// What a short descriptor's bits mean. `pxn` is the PXN bit that applies (the
    /// section's own, or the L2 table's for pages).
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

/// Attribute bits common to every short leaf format, before they are placed in a
/// descriptor.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remap_registers() {
        assert_eq!(PRRR, 0x9c0b_82a4);
        assert_eq!(NMRR, 0x40e0_40e0);
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

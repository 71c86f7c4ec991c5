//! The address-space identifier: the tag the TLB keeps with each non-global entry.
//!
//! Short descriptors carry it in `CONTEXTIDR.ASID`, LPAE in `TTBR0[55:48]` (8-bit ASIDs,
//! `TTBCR.A1 = 0`). The allocator that hands ASIDs out is `crate::asid`; the switch
//! programs that load one are [`super::switch`]. Re-exported as `crate::tlb::Asid` and
//! `crate::Asid`.

/// An 8-bit address-space identifier (short descriptors and LPAE with 8-bit ASIDs).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Asid(pub u8);

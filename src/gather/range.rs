//! The pending-invalidate record: which by-VA invalidates the next flush must issue.
//!
//! A fixed array of at most [`MAX_PENDING`] operations, one 32-bit word each (the page
//! address with the "all ASIDs" flag in bit 0). Past the configured limit the record
//! stops storing and only remembers that it *overflowed*: the flush then invalidates the
//! whole ASID (or everything), which covers every VA, so nothing is lost by forgetting
//! them.

use crate::addr::{VirtAddr, PAGE_SIZE};

/// Capacity of the record, and the largest accepted
/// [`super::GatherConfig::max_invalidates`].
pub const MAX_PENDING: usize = 64;

const ALL_ASIDS: u32 = 1;
const PAGE_MASK: u32 = !(PAGE_SIZE - 1);

/// One recorded by-VA invalidate.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PendingOp {
    /// Invalidate the page holding the VA for the gather's ASID (TLBIMVA).
    Va(VirtAddr),
    /// Invalidate the page holding the VA for every ASID (TLBIMVAA).
    VaAllAsids(VirtAddr),
}

impl PendingOp {
    const fn encode(self) -> u32 {
        match self {
            PendingOp::Va(va) => va.as_u32() & PAGE_MASK,
            PendingOp::VaAllAsids(va) => (va.as_u32() & PAGE_MASK) | ALL_ASIDS,
        }
    }
    const fn decode(word: u32) -> Self {
        let va = VirtAddr::new(word & PAGE_MASK);
        if word & ALL_ASIDS != 0 {
            PendingOp::VaAllAsids(va)
        } else {
            PendingOp::Va(va)
        }
    }
}

/// The bounded record of pending by-VA invalidates.
#[derive(Clone, Debug)]
pub(crate) struct PendingInvalidates {
    ops: [u32; MAX_PENDING],
    len: u8,
    limit: u8,
    overflowed: bool,
}

impl PendingInvalidates {
    /// An empty record that overflows past `limit` operations (clamped to
    /// [`MAX_PENDING`]; 0 makes every recorded operation overflow).
    pub(crate) const fn new(limit: usize) -> Self {
        let limit = if limit > MAX_PENDING {
            MAX_PENDING
        } else {
            limit
        };
        Self {
            ops: [0; MAX_PENDING],
            len: 0,
            limit: limit as u8,
            overflowed: false,
        }
    }

    /// Records `op`; past the limit, marks the record overflowed instead.
    #[inline]
    pub(crate) fn push(&mut self, op: PendingOp) {
        if self.overflowed {
            return;
        }
        if self.len >= self.limit {
            self.overflowed = true;
            self.len = 0;
            return;
        }
        self.ops[self.len as usize] = op.encode();
        self.len += 1;
    }

    /// Makes sure the flush invalidates some VA in `[va, va + span)` for *all* ASIDs: if a
    /// pending operation lies there it is widened to all ASIDs in place (same count) and
    /// `true` is returned; `true` too if the record overflowed (the fallback covers
    /// everything); `false` if the caller must add one.
    pub(crate) fn cover_span_all_asids(&mut self, va: VirtAddr, span: u64) -> bool {
        if self.overflowed {
            return true;
        }
        let start = va.as_u64();
        let end = start.saturating_add(span);
        match self.ops[..self.len as usize].iter_mut().find(|w| {
            let a = (**w & PAGE_MASK) as u64;
            a >= start && a < end
        }) {
            Some(w) => {
                *w |= ALL_ASIDS;
                true
            }
            None => false,
        }
    }

    /// Whether the flush already invalidates some VA in `[va, va + span)` for the gather's
    /// ASID: a pending operation of either kind lies there, or the record overflowed.
    pub(crate) fn covers_span(&self, va: VirtAddr, span: u64) -> bool {
        if self.overflowed {
            return true;
        }
        let start = va.as_u64();
        let end = start.saturating_add(span);
        self.ops[..self.len as usize].iter().any(|w| {
            let a = (*w & PAGE_MASK) as u64;
            a >= start && a < end
        })
    }

    /// Whether the record gave up storing operations (the flush must fall back).
    pub(crate) const fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Whether nothing is pending (and the record did not overflow).
    pub(crate) const fn is_empty(&self) -> bool {
        self.len == 0 && !self.overflowed
    }

    /// Operations stored (0 once overflowed).
    pub(crate) const fn stored(&self) -> usize {
        self.len as usize
    }

    /// The stored operations, in the order recorded.
    pub(crate) fn iter(&self) -> impl Iterator<Item = PendingOp> + '_ {
        self.ops[..self.len as usize]
            .iter()
            .map(|&w| PendingOp::decode(w))
    }

    /// Forgets everything (after a flush).
    pub(crate) fn clear(&mut self) {
        self.len = 0;
        self.overflowed = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn va(a: u32) -> VirtAddr {
        VirtAddr::new(a)
    }

    #[test]
    fn records_in_order_and_roundtrips() {
        let mut r = PendingInvalidates::new(8);
        r.push(PendingOp::Va(va(0x1234_5678)));
        r.push(PendingOp::VaAllAsids(va(0xc000_0000)));
        let ops: Vec<_> = r.iter().collect();
        assert_eq!(
            ops,
            [
                PendingOp::Va(va(0x1234_5000)),
                PendingOp::VaAllAsids(va(0xc000_0000))
            ]
        );
        assert!(!r.is_empty() && !r.overflowed());
        r.clear();
        assert!(r.is_empty());
    }

    #[test]
    fn overflows_past_limit_and_limit_is_clamped() {
        let mut r = PendingInvalidates::new(3);
        for i in 0..3 {
            r.push(PendingOp::Va(va(i << 12)));
        }
        assert!(!r.overflowed() && r.stored() == 3);
        r.push(PendingOp::Va(va(0x9000)));
        assert!(r.overflowed() && !r.is_empty() && r.stored() == 0);
        assert!(r.cover_span_all_asids(va(0x7000_0000), 4096));
        r.clear();
        assert!(r.is_empty());

        let mut big = PendingInvalidates::new(10_000);
        for i in 0..MAX_PENDING as u32 {
            big.push(PendingOp::Va(va(i << 12)));
        }
        assert!(!big.overflowed());
        big.push(PendingOp::Va(va(0)));
        assert!(big.overflowed());

        let mut zero = PendingInvalidates::new(0);
        zero.push(PendingOp::Va(va(0)));
        assert!(zero.overflowed());
    }

    #[test]
    fn cover_span_widens_in_bounds_only() {
        let mut r = PendingInvalidates::new(8);
        r.push(PendingOp::Va(va(0x0010_3000)));
        let mib = 1 << 20;
        assert!(!r.cover_span_all_asids(va(0x0000_0000), mib), "below");
        assert!(!r.cover_span_all_asids(va(0x0020_0000), mib), "above");
        assert_eq!(r.iter().next(), Some(PendingOp::Va(va(0x0010_3000))));
        assert!(r.cover_span_all_asids(va(0x0010_0000), mib));
        // Widened in place: still one op, now for all ASIDs.
        let ops: Vec<_> = r.iter().collect();
        assert_eq!(ops, [PendingOp::VaAllAsids(va(0x0010_3000))]);
    }
}

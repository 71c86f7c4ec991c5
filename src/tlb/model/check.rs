//! What the model reports: a cached entry that still reaches freed memory
//! ([`StaleTranslation`], [`CachedEntry`]), two cached entries in conflict ([`Conflict`]),
//! and the backend protocol broken ([`ProtocolError`]).

use core::fmt;

use super::{Invalidate, LeafEntry, TableEntry};
use crate::addr::{PhysAddr, PAGE_SIZE};

/// A cached entry that still reaches memory being freed: the bug class this crate exists
/// to prevent.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct StaleTranslation {
    /// The entry.
    pub entry: CachedEntry,
    /// The freed range: first address and number of 4 KiB frames.
    pub freed: (PhysAddr, usize),
    /// An invalidate that drops the entry was issued but its batch has not completed
    /// (freed before `complete`).
    pub awaiting_completion: bool,
}

/// A cached entry of either kind.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CachedEntry {
    /// A leaf translation whose physical range overlaps the freed memory.
    Leaf(LeafEntry),
    /// A walk-cache entry whose table lies in the freed memory.
    Table(TableEntry),
}

impl fmt::Display for StaleTranslation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (pa, frames) = self.freed;
        let end = pa.as_u64() + frames as u64 * u64::from(PAGE_SIZE);
        match self.entry {
            CachedEntry::Leaf(e) => {
                write!(f, "stale TLB entry: VA {} ({:?}, ", e.leaf.va, e.leaf.size)?;
                if e.leaf.global {
                    f.write_str("global")?;
                } else {
                    write!(f, "ASID {}", e.asid.0)?;
                }
                write!(f, ") -> PA {}", e.leaf.pa)?;
            }
            CachedEntry::Table(e) => write!(
                f,
                "stale walk-cache entry: table at PA {} (level {} entry, VA {} + {:#x}, ASID {})",
                e.table.table, e.table.level, e.table.span_va, e.table.span, e.asid.0
            )?,
        }
        write!(f, " still reachable while freeing [{pa}, {end:#x})")?;
        if self.awaiting_completion {
            f.write_str(" (its invalidate was issued but the batch was not completed)")?;
        }
        Ok(())
    }
}

impl std::error::Error for StaleTranslation {}

/// Two cached leaf entries that an access could both hit and that say different things
/// (output address at that VA, size or attributes): what the architecture calls a TLB
/// conflict (Arm ARM B3.10.1, a TLB conflict abort or UNPREDICTABLE). It arises when a
/// live translation is changed without break-before-make: a replicated leaf rewritten copy
/// by copy, a block replaced by a table of smaller leaves (or back) with the old entry
/// still cached.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Conflict {
    /// The entry already cached.
    pub cached: LeafEntry,
    /// The entry a later walk loaded next to it.
    pub loaded: LeafEntry,
}

impl Conflict {
    /// Whether the two entries conflict: they overlap, some access (an ASID or global)
    /// hits both, and they differ.
    #[must_use]
    pub fn between(a: &LeafEntry, b: &LeafEntry) -> bool {
        let (a0, a1) = (a.leaf.va.as_u64(), a.leaf.va.as_u64() + a.leaf.size.bytes());
        let (b0, b1) = (b.leaf.va.as_u64(), b.leaf.va.as_u64() + b.leaf.size.bytes());
        let overlap = a0 < b1 && b0 < a1;
        let same_asid = a.leaf.global || b.leaf.global || a.asid == b.asid;
        // The output of each at the VA where the other starts (or it starts).
        let at = a0.max(b0);
        let pa_a = a.leaf.pa.as_u64() + (at - a0);
        let pa_b = b.leaf.pa.as_u64() + (at - b0);
        let differ = pa_a != pa_b
            || a.leaf.size != b.leaf.size
            || a.leaf.attrs != b.leaf.attrs
            || a.leaf.global != b.leaf.global;
        overlap && same_asid && differ
    }
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, b) = (&self.cached.leaf, &self.loaded.leaf);
        write!(
            f,
            "TLB conflict: cached VA {} ({:?}) -> PA {} {:?}, loaded VA {} ({:?}) -> PA {} {:?}",
            a.va, a.size, a.pa, a.attrs, b.va, b.size, b.pa, b.attrs
        )
    }
}

/// The backend protocol was not followed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ProtocolError {
    /// Invalidates were issued with no batch open (before `prepare`, or after `complete`);
    /// they were not applied.
    Unprepared {
        /// How many.
        count: usize,
        /// The first of them.
        first: Invalidate,
    },
    /// A batch was prepared and invalidates issued, but `complete` has not been called.
    NotCompleted {
        /// Invalidates waiting for completion.
        pending: usize,
    },
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::Unprepared { count, first } => write!(
                f,
                "{count} invalidate(s) issued outside a prepare/complete batch (first: {first:?})"
            ),
            ProtocolError::NotCompleted { pending } => {
                write!(
                    f,
                    "{pending} invalidate(s) issued but the batch never completed"
                )
            }
        }
    }
}

impl std::error::Error for ProtocolError {}

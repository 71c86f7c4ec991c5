//! The request a shootdown carries: [`FlushOp`] and [`FlushRequest`], the bounded,
//! read-only list of what one batch asked for, which degrades to one TLBIASID or TLBIALL
//! when full, and its replay on a target CPU ([`FlushRequest::run_local`]: one local
//! batch ending in the completion barrier).

use crate::addr::VirtAddr;
#[cfg(target_arch = "arm")]
use crate::tlb::armv7::Armv7Tlb;
#[cfg(target_arch = "arm")]
use crate::tlb::select::Shareability;
use crate::tlb::{Asid, TlbBackend};

/// Most operations a [`FlushRequest`] records before it degrades. The TLB layer's own
/// number: 64, as many by-VA operations as one gather flush issues before the gather falls
/// back to a whole-ASID invalidate itself (`crate::gather::MAX_PENDING`, which the gather
/// checks at compile time to fit), so a gather's flush is replayed exactly.
pub const REQUEST_CAPACITY: usize = 64;

/// One operation of a [`FlushRequest`], as every target CPU replays it locally.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FlushOp {
    /// `TLBIMVA`: one VA for one ASID (and global entries for it).
    Va(VirtAddr, Asid),
    /// `TLBIMVAA`: one VA for every ASID.
    VaAllAsids(VirtAddr),
    /// `TLBIASID`: every non-global entry of one ASID.
    Asid(Asid),
    /// `TLBIALL`: everything.
    All,
}

impl FlushOp {
    /// The one ASID this operation is about (`None` for the all-ASID forms).
    const fn asid(self) -> Option<Asid> {
        match self {
            FlushOp::Va(_, a) | FlushOp::Asid(a) => Some(a),
            FlushOp::VaAllAsids(_) | FlushOp::All => None,
        }
    }

    fn apply<B: TlbBackend + ?Sized>(self, local: &mut B) {
        match self {
            FlushOp::Va(va, asid) => local.invalidate_va(va, asid),
            FlushOp::VaAllAsids(va) => local.invalidate_va_all_asids(va),
            FlushOp::Asid(asid) => local.invalidate_asid(asid),
            FlushOp::All => local.invalidate_all(),
        }
    }
}

/// What one batch asked for, as a read-only list every target CPU replays
/// ([`FlushRequest::run_local`]). Bounded ([`REQUEST_CAPACITY`]); past that it keeps one
/// coarser operation that covers everything recorded (see the module documentation).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FlushRequest {
    ops: [FlushOp; REQUEST_CAPACITY],
    len: usize,
    /// Set once the list overflowed (or an all-TLB operation came): this one operation
    /// replaces the list.
    coarse: Option<FlushOp>,
    branch_predictor: bool,
    asid_fallback: bool,
}

impl Default for FlushRequest {
    fn default() -> Self {
        Self::new()
    }
}

impl FlushRequest {
    /// An empty request (degrading per ASID to TLBIASID when full).
    #[must_use]
    pub const fn new() -> Self {
        Self {
            ops: [FlushOp::All; REQUEST_CAPACITY],
            len: 0,
            coarse: None,
            branch_predictor: false,
            asid_fallback: true,
        }
    }

    /// An empty request; with `asid_fallback` false an overflow always degrades to
    /// TLBIALL (for a kernel that does not trust TLBIASID to drop walk-cache entries,
    /// `GatherConfig::asid_flush_drops_walk_cache` off).
    #[must_use]
    pub const fn with_asid_fallback(asid_fallback: bool) -> Self {
        let mut r = Self::new();
        r.asid_fallback = asid_fallback;
        r
    }

    /// Adds one operation (degrading when the list is full).
    pub fn push(&mut self, op: FlushOp) {
        if let Some(coarse) = self.coarse {
            self.coarse = Some(Self::cover(coarse, op));
            return;
        }
        if op == FlushOp::All {
            self.coarse = Some(FlushOp::All);
            self.len = 0;
            return;
        }
        if self.len < REQUEST_CAPACITY {
            self.ops[self.len] = op;
            self.len += 1;
            return;
        }
        // Full: one operation that covers every recorded one and `op`.
        let one_asid = op.asid().filter(|&a| {
            self.asid_fallback && self.ops[..self.len].iter().all(|o| o.asid() == Some(a))
        });
        self.coarse = Some(one_asid.map_or(FlushOp::All, FlushOp::Asid));
        self.len = 0;
    }

    /// The coarse operation covering `coarse` and `op`.
    fn cover(coarse: FlushOp, op: FlushOp) -> FlushOp {
        match (coarse, op.asid()) {
            (FlushOp::Asid(a), Some(b)) if a == b => coarse,
            _ => FlushOp::All,
        }
    }

    /// Adds a branch-predictor invalidate.
    pub fn push_branch_predictor(&mut self) {
        self.branch_predictor = true;
    }

    /// Forgets everything (the backend's next batch).
    pub fn clear(&mut self) {
        self.len = 0;
        self.coarse = None;
        self.branch_predictor = false;
    }

    /// Whether the request asks for nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0 && self.coarse.is_none() && !self.branch_predictor
    }

    /// Whether the list overflowed (or holds TLBIALL) and one coarse operation replaces it.
    #[must_use]
    pub fn degraded(&self) -> bool {
        self.coarse.is_some()
    }

    /// Whether a branch-predictor invalidate is asked for.
    #[must_use]
    pub fn branch_predictor(&self) -> bool {
        self.branch_predictor
    }

    /// The TLB operations a target replays, in order.
    pub fn ops(&self) -> impl Iterator<Item = FlushOp> + '_ {
        let list: &[FlushOp] = if self.coarse.is_some() {
            &[]
        } else {
            &self.ops[..self.len]
        };
        self.coarse.into_iter().chain(list.iter().copied())
    }

    /// What a target CPU runs (from its IPI handler): the whole request as one local
    /// batch on `local` (`prepare`, every operation, the branch predictor if asked,
    /// `complete`). With a local `Armv7Tlb` that is `dsb nshst; TLBI*; [BPIALL]; dsb nsh;
    /// isb`: when it returns, the invalidates have completed on this CPU and the CPU may
    /// acknowledge.
    pub fn run_local<B: TlbBackend + ?Sized>(&self, local: &mut B) {
        local.prepare();
        for op in self.ops() {
            op.apply(local);
        }
        if self.branch_predictor {
            local.invalidate_branch_predictor();
        }
        local.complete();
    }

    /// [`FlushRequest::run_local`] with this CPU's local (non-broadcast) CP15 backend.
    #[cfg(target_arch = "arm")]
    pub fn run_on_this_cpu(&self) {
        self.run_local(&mut Armv7Tlb::new(crate::tlb::Cp15, Shareability::Local));
    }
}

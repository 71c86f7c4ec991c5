//! TLB maintenance: what the rest of the crate may ask of the hardware, and the backends
//! that do it.
//!
//! [`TlbBackend`] is the whole interface. The gather (and anything else that changes live
//! tables) uses it in *batches*:
//!
//! ```text
//! backend.prepare();            // one barrier: table writes visible to the walkers
//! backend.invalidate_va(..);    // any number of invalidates
//! backend.invalidate_va(..);
//! backend.complete();           // one completion barrier (+ isb): all invalidates done
//! ```
//!
//! Nothing may be freed, and no new mapping relied on, until `complete` has returned.
//! Every backend counts what it issued ([`TlbCounters`]), exactly, because tests and
//! benchmarks compare those numbers.

use crate::addr::VirtAddr;

pub mod armv7;
#[cfg(feature = "tlb-model")]
pub mod cpu_model;
pub mod errata;
pub mod ipi;
#[cfg(feature = "tlb-model")]
pub mod model;
#[cfg(feature = "tlb-model")]
mod model_walk;
pub mod observe;
pub mod select;
#[cfg(feature = "tlb-model")]
pub mod smp_model;

pub use armv7::{ActlrPolicy, Armv7Tlb, Insn, InsnSink, SysReg, SysRegs};
#[cfg(target_arch = "arm")]
pub use armv7::{Cp15, Cp15Tlb};
pub use errata::{ErrataConfig, IpiHook, IpiTarget, SystemErrata};
pub use observe::Observed;
pub use select::{
    BroadcastReason, BroadcastUnavailable, CpuFeatures, CpuRegisters, DetectError, Shareability,
};

pub use crate::arch::context::Asid;

/// Exact counts of the operations and barriers a backend issued.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct TlbCounters {
    /// Invalidate one VA for one ASID (TLBIMVA / TLBIMVAIS).
    pub va: u64,
    /// Invalidate one VA for all ASIDs (TLBIMVAA / TLBIMVAAIS).
    pub va_all_asids: u64,
    /// Invalidate one ASID (TLBIASID / TLBIASIDIS).
    pub asid: u64,
    /// Invalidate everything (TLBIALL / TLBIALLIS).
    pub all: u64,
    /// Branch predictor invalidates (BPIALL / BPIALLIS).
    pub branch_predictor: u64,
    /// "Before" barriers making table writes visible (`dsb ishst` / `dsb nshst`).
    pub prepares: u64,
    /// Completion barriers (`dsb ish` / `dsb nsh` + `isb`).
    pub completions: u64,
    /// Extra operations issued only for errata workarounds (dummy invalidates).
    pub errata: u64,
}

impl TlbCounters {
    /// Total TLB invalidate operations (not barriers, not branch predictor, not errata).
    #[must_use]
    pub const fn invalidates(&self) -> u64 {
        self.va + self.va_all_asids + self.asid + self.all
    }

    /// Field-wise `self - earlier` (for measuring one piece of work); saturates at 0 if
    /// the arguments are the wrong way round.
    #[must_use]
    pub const fn since(&self, earlier: &TlbCounters) -> TlbCounters {
        TlbCounters {
            va: self.va.saturating_sub(earlier.va),
            va_all_asids: self.va_all_asids.saturating_sub(earlier.va_all_asids),
            asid: self.asid.saturating_sub(earlier.asid),
            all: self.all.saturating_sub(earlier.all),
            branch_predictor: self
                .branch_predictor
                .saturating_sub(earlier.branch_predictor),
            prepares: self.prepares.saturating_sub(earlier.prepares),
            completions: self.completions.saturating_sub(earlier.completions),
            errata: self.errata.saturating_sub(earlier.errata),
        }
    }
}

/// What the crate may ask of the TLB.
///
/// Implementations: the ARMv7 local and inner-shareable backends (on `target_arch = "arm"`),
/// the IPI shootdown backend [`ipi::IpiTlb`], and the host TLB model (feature `tlb-model`).
pub trait TlbBackend {
    /// Barrier before a batch: every descriptor write so far is visible to the table
    /// walkers that the following invalidates target.
    fn prepare(&mut self);
    /// Invalidates the translation of the page holding `va` for `asid` (and any global entry
    /// for it), including walk-cache entries for `va`.
    fn invalidate_va(&mut self, va: VirtAddr, asid: Asid);
    /// Invalidates the translation of the page holding `va` for every ASID (global/kernel
    /// mappings), including walk-cache entries for `va`.
    fn invalidate_va_all_asids(&mut self, va: VirtAddr);
    /// Invalidates every non-global entry tagged with `asid`.
    fn invalidate_asid(&mut self, asid: Asid);
    /// Invalidates every entry.
    fn invalidate_all(&mut self);
    /// Invalidates the branch predictor (needed when executable mappings changed).
    fn invalidate_branch_predictor(&mut self);
    /// Completion barrier after a batch: every invalidate issued since `prepare` has taken
    /// effect on every CPU this backend covers, and this CPU's context sees it (`isb`).
    fn complete(&mut self);
    /// What this backend has issued since it was created.
    fn counters(&self) -> TlbCounters;
}

impl<T: TlbBackend + ?Sized> TlbBackend for &mut T {
    fn prepare(&mut self) {
        (**self).prepare()
    }
    fn invalidate_va(&mut self, va: VirtAddr, asid: Asid) {
        (**self).invalidate_va(va, asid)
    }
    fn invalidate_va_all_asids(&mut self, va: VirtAddr) {
        (**self).invalidate_va_all_asids(va)
    }
    fn invalidate_asid(&mut self, asid: Asid) {
        (**self).invalidate_asid(asid)
    }
    fn invalidate_all(&mut self) {
        (**self).invalidate_all()
    }
    fn invalidate_branch_predictor(&mut self) {
        (**self).invalidate_branch_predictor()
    }
    fn complete(&mut self) {
        (**self).complete()
    }
    fn counters(&self) -> TlbCounters {
        (**self).counters()
    }
}

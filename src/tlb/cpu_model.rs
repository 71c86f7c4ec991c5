//! Host CPU model (feature `tlb-model`): one ARMv7 CPU's translation registers and TLB,
//! executing the crate's own instruction programs ([`Insn`], through [`SysRegs`]) the way
//! silicon may and QEMU 7.2 does not:
//!
//! - **speculative walks between any two instructions**: before every instruction the
//!   model walks every VA of its speculation set ([`CpuModel::speculate`]) through the
//!   current `TTBR0` under the current ASID, and caches what the walk loaded (leaf *and*
//!   walk-cache entries, ASID-tagged, in the shared [`TlbModel`](super::model::TlbModel));
//! - **register writes take effect at the next `isb`, in any order**: until then a walk
//!   may see any subset of the pending writes (the model tries each subset);
//! - **ASID-tagged walk caches** (Cortex-A15 TRM, "Intermediate table walk caches"):
//!   inherited from [`TlbModel`](super::model::TlbModel);
//! - **Cortex-A9 754322** when `MIDR` says r2/r3: a walk started since the last full `dsb`
//!   may complete after a `CONTEXTIDR` change and be tagged with the new ASID;
//! - `TTBCR.PD0` / `EPD0`: no walk below the split.
//!
//! TLB invalidates issued through it go to the [`TlbModel`](super::model::TlbModel) (a batch opens at the first
//! one and completes at the next full `dsb`), so a gather whose backend is an
//! [`Armv7Tlb`](super::Armv7Tlb) on a [`Cpu`] runs the crate's real backend into the model
//! and [`FreeChecker`](super::model::FreeChecker) on the same [`SharedTlbModel`] sees what
//! stays reachable.
//!
//! The model checks one thing itself: a walk through a `TTBR0` that points at no table it
//! was given ([`CpuModel::stray_walks`]), which on hardware reads whatever is there.
//!
//! [`WalkCoherence`] is the companion model for table-walk attributes and cache cleaning.

use std::vec::Vec;

use super::model::{SharedTlbModel, WalkSource};
use super::{Asid, Insn, InsnSink, SysReg, SysRegs, TlbBackend};
use crate::addr::{PhysAddr, VirtAddr};
use crate::tlb::errata::a9_754322_affected;

const EAE: u32 = 1 << 31;
const PD0: u32 = 1 << 4;
const EPD0: u32 = 1 << 7;

/// The registers the model keeps.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Regs {
    /// `MIDR`.
    pub midr: u32,
    /// `CONTEXTIDR`.
    pub contextidr: u32,
    /// `TTBCR`.
    pub ttbcr: u32,
    /// `TTBR0` (the 32-bit value zero-extended with short descriptors).
    pub ttbr0: u64,
    /// `TTBR1`.
    pub ttbr1: u64,
}

impl Regs {
    fn apply(&mut self, insn: Insn) {
        match insn {
            Insn::SetContextidr(v) => self.contextidr = v,
            Insn::SetTtbr0(v) => self.ttbr0 = u64::from(v),
            Insn::SetTtbr0Lpae(v) => self.ttbr0 = v,
            Insn::SetTtbcr(v) => self.ttbcr = v,
            _ => {}
        }
    }

    /// The ASID walks are tagged with now.
    #[must_use]
    pub fn asid(&self) -> Asid {
        if self.ttbcr & EAE != 0 {
            Asid((self.ttbr0 >> 48) as u8)
        } else {
            Asid(self.contextidr as u8)
        }
    }

    /// The table a walk of `va` goes through, or `None` if it is not walked through
    /// `TTBR0` (walks disabled, or above the split).
    fn ttbr0_table(&self, va: VirtAddr) -> Option<PhysAddr> {
        let n = self.ttbcr & 7;
        // LPAE `T1SZ` (bits [18:16]) with `T0SZ = 0`: `TTBR1` takes the top `4 GiB >> T1SZ`.
        let t1sz = if self.ttbcr & EAE != 0 {
            (self.ttbcr >> 16) & 7
        } else {
            0
        };
        let split = match (n, t1sz) {
            (0, 0) => 1u64 << 32,
            (0, t1) => (1u64 << 32) - (1u64 << (32 - t1)),
            (n, _) => 1u64 << (32 - n),
        };
        if va.as_u64() >= split {
            return None;
        }
        if self.ttbcr & EAE != 0 {
            (self.ttbcr & EPD0 == 0).then(|| PhysAddr::new(self.ttbr0 & 0xff_ffff_ffe0))
        } else {
            (self.ttbcr & PD0 == 0).then(|| PhysAddr::new(self.ttbr0 & 0xffff_ff80))
        }
    }
}

/// The persistent state of the modelled CPU: registers, writes waiting for an `isb`, walks
/// in flight, and the TLB (shared, so a [`FreeChecker`](super::model::FreeChecker) can
/// look at it).
#[derive(Debug, Default)]
pub struct CpuModel {
    /// The registers as synchronized (after the last `isb`).
    pub regs: Regs,
    /// Writes issued since the last `isb`.
    pending: Vec<Insn>,
    /// VAs walked speculatively before every instruction.
    pub speculate: Vec<VirtAddr>,
    /// 754322: walks started since the last full `dsb` (VA and table).
    in_flight: Vec<(VirtAddr, PhysAddr)>,
    tlb: SharedTlbModel,
    batch_open: bool,
    /// Every instruction executed, in order.
    pub log: Vec<Insn>,
    stray: Vec<(PhysAddr, VirtAddr)>,
}

impl CpuModel {
    /// A CPU with these registers and an empty TLB.
    #[must_use]
    pub fn new(regs: Regs) -> Self {
        Self {
            regs,
            ..Self::default()
        }
    }

    /// The TLB (share it with a `FreeChecker`).
    #[must_use]
    pub fn tlb(&self) -> &SharedTlbModel {
        &self.tlb
    }

    /// Walks that went through a `TTBR0` no given table is at: (table, VA).
    #[must_use]
    pub fn stray_walks(&self) -> &[(PhysAddr, VirtAddr)] {
        &self.stray
    }

    /// A view that executes instructions with the tables in `tables` (root address and
    /// walker) and walks speculatively.
    pub fn with<'a>(&'a mut self, tables: &'a [(PhysAddr, &'a dyn WalkSource)]) -> Cpu<'a> {
        Cpu {
            model: self,
            tables,
        }
    }

    /// A view that executes instructions without walking (for a TLB backend used while the
    /// tables are being changed: nothing speculates during the gather's own batch, as the
    /// older [`TlbModel`](super::model::TlbModel)(super::model::TlbModel) tests assume).
    pub fn without_walks(&mut self) -> Cpu<'_> {
        Cpu {
            model: self,
            tables: &[],
        }
    }

    /// An access to `va` by the running context (synchronized registers): what it
    /// translates to, caching what it loads.
    pub fn access(
        &mut self,
        va: VirtAddr,
        tables: &[(PhysAddr, &dyn WalkSource)],
    ) -> Option<PhysAddr> {
        let regs = self.regs;
        let table = regs.ttbr0_table(va);
        let source = table.and_then(|t| find(tables, t));
        let mut tlb = self.tlb.borrow_mut();
        match source {
            Some(src) => tlb.access(va, regs.asid(), src).map(|t| t.pa),
            None => tlb.access(va, regs.asid(), &Nothing).map(|t| t.pa),
        }
    }
}

fn find<'a>(
    tables: &[(PhysAddr, &'a dyn WalkSource)],
    root: PhysAddr,
) -> Option<&'a dyn WalkSource> {
    tables.iter().find(|(r, _)| *r == root).map(|&(_, s)| s)
}

/// A walker over no table: every walk faults.
struct Nothing;
impl WalkSource for Nothing {
    fn walk(&self, _: VirtAddr) -> super::model::Walk {
        super::model::Walk::default()
    }
    fn walk_from(&self, _: u8, _: PhysAddr, _: VirtAddr) -> super::model::Walk {
        super::model::Walk::default()
    }
}

/// [`CpuModel`] executing, with the tables it may walk.
pub struct Cpu<'a> {
    model: &'a mut CpuModel,
    tables: &'a [(PhysAddr, &'a dyn WalkSource)],
}

impl Cpu<'_> {
    /// One round of speculative walks: every VA of the speculation set, under every state
    /// the pending writes allow.
    pub fn speculate(&mut self) {
        if self.tables.is_empty() {
            return;
        }
        let pending = self.model.pending.clone();
        let subsets = 1u32 << pending.len().min(4);
        let erratum = a9_754322_affected(self.model.regs.midr);
        for mask in 0..subsets {
            let mut regs = self.model.regs;
            for (i, w) in pending.iter().enumerate() {
                if mask & (1 << i) != 0 {
                    regs.apply(*w);
                }
            }
            for k in 0..self.model.speculate.len() {
                let va = self.model.speculate[k];
                let Some(table) = regs.ttbr0_table(va) else {
                    continue;
                };
                let Some(src) = find(self.tables, table) else {
                    self.model.stray.push((table, va));
                    continue;
                };
                let _ = self.model.tlb.borrow_mut().access(va, regs.asid(), src);
                if erratum && !self.model.in_flight.contains(&(va, table)) {
                    self.model.in_flight.push((va, table));
                }
            }
        }
    }

    fn synchronize(&mut self) {
        let before = self.model.regs.asid();
        for w in core::mem::take(&mut self.model.pending) {
            self.model.regs.apply(w);
        }
        let after = self.model.regs.asid();
        if after != before && !self.tables.is_empty() {
            // 754322: walks in flight complete now, under the new ASID.
            let in_flight = core::mem::take(&mut self.model.in_flight);
            for (va, table) in in_flight {
                if let Some(src) = find(self.tables, table) {
                    let _ = self.model.tlb.borrow_mut().access(va, after, src);
                }
            }
        }
    }

    fn tlbi(&mut self, f: impl FnOnce(&mut super::model::TlbModel)) {
        let mut tlb = self.model.tlb.borrow_mut();
        if !self.model.batch_open {
            tlb.prepare();
            self.model.batch_open = true;
        }
        f(&mut tlb);
    }

    fn full_dsb(&mut self) {
        self.model.in_flight.clear();
        if self.model.batch_open {
            self.model.tlb.borrow_mut().complete();
            self.model.batch_open = false;
        }
    }
}

impl InsnSink for Cpu<'_> {
    fn issue(&mut self, insn: Insn) {
        self.speculate();
        self.model.log.push(insn);
        let va = |op: u32| VirtAddr::new(op & !0xfff);
        match insn {
            Insn::Tlbiall | Insn::Tlbiallis => self.tlbi(|t| t.invalidate_all()),
            Insn::Tlbimva(op) | Insn::Tlbimvais(op) => {
                self.tlbi(|t| t.invalidate_va(va(op), Asid(op as u8)))
            }
            Insn::Tlbiasid(a) | Insn::Tlbiasidis(a) => self.tlbi(|t| t.invalidate_asid(Asid(a))),
            Insn::Tlbimvaa(op) | Insn::Tlbimvaais(op) => {
                self.tlbi(|t| t.invalidate_va_all_asids(va(op)))
            }
            Insn::Bpiall | Insn::Bpiallis => {
                self.model.tlb.borrow_mut().invalidate_branch_predictor()
            }
            Insn::DsbSy | Insn::DsbIsh | Insn::DsbNsh => self.full_dsb(),
            Insn::DsbIshst | Insn::DsbNshst => {}
            Insn::Isb => self.synchronize(),
            Insn::SetContextidr(_)
            | Insn::SetTtbr0(_)
            | Insn::SetTtbr0Lpae(_)
            | Insn::SetTtbcr(_) => self.model.pending.push(insn),
        }
    }
}

impl SysRegs for Cpu<'_> {
    fn read(&mut self, reg: SysReg) -> u64 {
        // A read after an unsynchronized write sees the write (it is this CPU's own).
        let mut regs = self.model.regs;
        for w in &self.model.pending {
            regs.apply(*w);
        }
        match reg {
            SysReg::Midr => u64::from(regs.midr),
            SysReg::Contextidr => u64::from(regs.contextidr),
            SysReg::Ttbcr => u64::from(regs.ttbcr),
            SysReg::Ttbr0 => regs.ttbr0 & 0xffff_ffff,
            SysReg::Ttbr1 => regs.ttbr1 & 0xffff_ffff,
            SysReg::Ttbr0Lpae => regs.ttbr0,
            SysReg::Ttbr1Lpae => regs.ttbr1,
        }
    }
}

/// Where a data-cache clean of a descriptor write reaches.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum CleanTo {
    /// Not cleaned: the write sits in this CPU's L1 data cache.
    Nowhere,
    /// Cleaned to the point of unification (`DCCMVAU`): the unified cache level.
    PoU,
    /// Cleaned to the point of coherency (`DCCMVAC`): memory.
    PoC,
}

/// A model of where the table walker reads a descriptor from, for a core configuration
/// and the walk attributes in `TTBRn`, after a write cleaned to some level.
///
/// - `S = 1` walks on a core that does not take part in coherency (no multiprocessing
///   extensions, or `ACTLR.SMP = 0`): Shareable Normal memory is treated as Non-cacheable
///   there, so the walk reads memory (the point of coherency).
/// - Cacheable walks on a core whose walks are coherent with the data cache
///   (`ID_MMFR3.CohWalk = 1`, and in coherency if shareable) see the L1 data cache.
/// - Otherwise cacheable walks look up the caches from the point of unification out.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct WalkCoherence {
    /// The core takes part in coherency (`ACTLR.SMP`, multiprocessing extensions).
    pub core_coherent: bool,
    /// `ID_MMFR3.CohWalk = 1`.
    pub coherent_walk: bool,
}

impl WalkCoherence {
    /// The level the walker reads with these `TTBRn` attributes.
    #[must_use]
    pub fn reads_from(&self, shareable_walk: bool) -> CleanTo {
        if shareable_walk && !self.core_coherent {
            CleanTo::PoC
        } else if self.coherent_walk {
            CleanTo::Nowhere
        } else {
            CleanTo::PoU
        }
    }

    /// Whether a descriptor write cleaned to `clean` is what the walker reads.
    #[must_use]
    pub fn walker_sees(&self, shareable_walk: bool, clean: CleanTo) -> bool {
        clean >= self.reads_from(shareable_walk)
    }
}

#[cfg(test)]
#[path = "cpu_model_tests.rs"]
mod tests;

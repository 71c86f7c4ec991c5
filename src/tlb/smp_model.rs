//! Host SMP model (feature `tlb-model`): several CPUs, each with its own [`TlbModel`], and
//! an IPI transport between them, for testing [`super::ipi::IpiTlb`] and code that drives
//! it.
//!
//! - Each CPU's TLB is a [`TlbModel`]: it caches whatever that CPU's accesses load
//!   ([`SmpTlbModel::access`]) and drops entries only when an invalidate issued *on that
//!   CPU* completes. An invalidate is applied at the completion barrier (`complete`), not
//!   when issued: so an acknowledgement sent before the barrier leaves the entries live.
//! - [`ModelTransport`] is an [`IpiTransport`]: `shootdown` delivers the request to every
//!   target, which replays it on its own TLB ([`FlushRequest::run_local`]) and
//!   acknowledges. It can be made faulty ([`TransportFault`]): a target that acknowledges
//!   without its local operations, one that acknowledges before its completion barrier
//!   (the barrier then happens at the next [`SmpTlbModel::settle`], too late), or a CPU
//!   left out of the targets.
//! - [`SmpFreeChecker`] is a [`Memory`] wrapper that checks, at every free, every CPU's
//!   TLB for a cached entry still reaching the freed frames.
//!
//! Everything runs on one host thread; interleavings are the test's: it chooses which CPU
//! accesses what between the steps of a gather (a CPU switching in while a gather is
//! open, between its `prepare` and its `complete`, is one of them).

use core::cell::RefCell;
use core::ptr::NonNull;
use std::rc::Rc;
use std::vec::Vec;

use super::ipi::{CpuSet, FlushRequest, IpiLocal, IpiTransport};
use super::model::{StaleTranslation, TlbModel, Translation, WalkSource};
use super::{Asid, TlbBackend, TlbCounters};
use crate::addr::{PhysAddr, VirtAddr, PAGE_SIZE};
use crate::memory::{MappedRun, Memory};

#[derive(Debug)]
struct State {
    cpus: Vec<TlbModel>,
    /// CPUs that acknowledged before their completion barrier: it runs at `settle`.
    deferred: Vec<usize>,
    /// Requests delivered to a target (IPIs taken).
    delivered: u64,
}

/// N CPUs' TLBs, shared by the backends under test and the test (which plays the CPUs).
#[derive(Clone, Debug)]
pub struct SmpTlbModel(Rc<RefCell<State>>);

/// How a [`ModelTransport`] misbehaves.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TransportFault {
    /// Every target replays the request and acknowledges after its barrier.
    None,
    /// This CPU acknowledges without running its local operations.
    SkipLocal(usize),
    /// Every target issues its operations but acknowledges before its completion
    /// barrier; the barriers run at the next [`SmpTlbModel::settle`].
    AckBeforeBarrier,
    /// This CPU is never interrupted, whatever the targets say.
    LeaveOut(usize),
}

impl SmpTlbModel {
    /// `cpus` CPUs with empty TLBs.
    #[must_use]
    pub fn new(cpus: usize) -> Self {
        Self(Rc::new(RefCell::new(State {
            cpus: (0..cpus).map(|_| TlbModel::new()).collect(),
            deferred: Vec::new(),
            delivered: 0,
        })))
    }

    /// How many CPUs.
    #[must_use]
    pub fn cpus(&self) -> usize {
        self.0.borrow().cpus.len()
    }

    /// Every CPU.
    #[must_use]
    pub fn online(&self) -> CpuSet {
        CpuSet::first(self.cpus())
    }

    /// An access by `cpu` under `asid` to `va` (see [`TlbModel::access`]).
    ///
    /// # Panics
    /// If `cpu` is not a CPU of the model (test code only).
    pub fn access<W: WalkSource + ?Sized>(
        &self,
        cpu: usize,
        va: VirtAddr,
        asid: Asid,
        source: &W,
    ) -> Option<Translation> {
        self.0.borrow_mut().cpus[cpu].access(va, asid, source)
    }

    /// Runs `f` on `cpu`'s TLB.
    ///
    /// # Panics
    /// If `cpu` is not a CPU of the model (test code only).
    pub fn with_cpu<R>(&self, cpu: usize, f: impl FnOnce(&mut TlbModel) -> R) -> R {
        f(&mut self.0.borrow_mut().cpus[cpu])
    }

    /// Every cached entry on any CPU that reaches `[pa, pa + frames * 4 KiB)`, with its CPU.
    #[must_use]
    pub fn stale_entries(&self, pa: PhysAddr, frames: usize) -> Vec<(usize, StaleTranslation)> {
        let s = self.0.borrow();
        s.cpus
            .iter()
            .enumerate()
            .flat_map(|(c, t)| t.stale_entries(pa, frames).map(move |e| (c, e)))
            .collect()
    }

    /// The completion barriers that faulty targets skipped before acknowledging run now.
    pub fn settle(&self) {
        let mut s = self.0.borrow_mut();
        let deferred = core::mem::take(&mut s.deferred);
        for cpu in deferred {
            s.cpus[cpu].complete();
        }
    }

    /// Requests delivered to target CPUs so far.
    #[must_use]
    pub fn delivered(&self) -> u64 {
        self.0.borrow().delivered
    }

    /// `cpu`'s TLB as a local backend (for [`super::ipi::IpiTlb::with_local`]).
    #[must_use]
    pub fn local(&self, cpu: usize) -> CpuTlb {
        CpuTlb {
            smp: self.clone(),
            cpu,
        }
    }

    /// The transport as `cpu` uses it.
    #[must_use]
    pub fn transport(&self, cpu: usize, fault: TransportFault) -> ModelTransport {
        ModelTransport {
            smp: self.clone(),
            cpu,
            fault,
        }
    }
}

/// One CPU's TLB of an [`SmpTlbModel`] as a [`TlbBackend`].
#[derive(Clone, Debug)]
pub struct CpuTlb {
    smp: SmpTlbModel,
    cpu: usize,
}

impl CpuTlb {
    fn with<R>(&self, f: impl FnOnce(&mut TlbModel) -> R) -> R {
        self.smp.with_cpu(self.cpu, f)
    }
}

impl TlbBackend for CpuTlb {
    fn prepare(&mut self) {
        self.with(TlbModel::prepare)
    }
    fn invalidate_va(&mut self, va: VirtAddr, asid: Asid) {
        self.with(|t| t.invalidate_va(va, asid))
    }
    fn invalidate_va_all_asids(&mut self, va: VirtAddr) {
        self.with(|t| t.invalidate_va_all_asids(va))
    }
    fn invalidate_asid(&mut self, asid: Asid) {
        self.with(|t| t.invalidate_asid(asid))
    }
    fn invalidate_all(&mut self) {
        self.with(TlbModel::invalidate_all)
    }
    fn invalidate_branch_predictor(&mut self) {
        self.with(TlbModel::invalidate_branch_predictor)
    }
    fn complete(&mut self) {
        self.with(TlbModel::complete)
    }
    fn counters(&self) -> TlbCounters {
        self.with(|t| t.counters())
    }
}

impl IpiLocal for CpuTlb {
    fn prepare_for_remote(&mut self) {
        // The model sees no table writes: one barrier is as good as another here.
        self.prepare()
    }
}

/// A target that issues everything but whose completion barrier is late.
struct LateBarrier<'a>(&'a mut TlbModel);

impl TlbBackend for LateBarrier<'_> {
    fn prepare(&mut self) {
        self.0.prepare()
    }
    fn invalidate_va(&mut self, va: VirtAddr, asid: Asid) {
        self.0.invalidate_va(va, asid)
    }
    fn invalidate_va_all_asids(&mut self, va: VirtAddr) {
        self.0.invalidate_va_all_asids(va)
    }
    fn invalidate_asid(&mut self, asid: Asid) {
        self.0.invalidate_asid(asid)
    }
    fn invalidate_all(&mut self) {
        self.0.invalidate_all()
    }
    fn invalidate_branch_predictor(&mut self) {
        self.0.invalidate_branch_predictor()
    }
    fn complete(&mut self) {}
    fn counters(&self) -> TlbCounters {
        self.0.counters()
    }
}

/// The IPI transport between the CPUs of an [`SmpTlbModel`], as one CPU uses it.
#[derive(Clone, Debug)]
pub struct ModelTransport {
    smp: SmpTlbModel,
    cpu: usize,
    fault: TransportFault,
}

impl IpiTransport for ModelTransport {
    fn this_cpu(&self) -> usize {
        self.cpu
    }

    fn online(&self) -> CpuSet {
        self.smp.online()
    }

    fn shootdown(&self, targets: CpuSet, request: &FlushRequest) {
        let mut s = self.smp.0.borrow_mut();
        for cpu in targets.iter().filter(|&c| c != self.cpu) {
            if cpu >= s.cpus.len() || self.fault == TransportFault::LeaveOut(cpu) {
                continue;
            }
            s.delivered += 1;
            match self.fault {
                TransportFault::SkipLocal(c) if c == cpu => {}
                TransportFault::AckBeforeBarrier => {
                    request.run_local(&mut LateBarrier(&mut s.cpus[cpu]));
                    s.deferred.push(cpu);
                }
                _ => request.run_local(&mut s.cpus[cpu]),
            }
        }
    }
}

/// A [`Memory`] wrapper checking every CPU's TLB at every free (`free_frames`,
/// `release_mapped`), recording each cached entry that still reaches the freed frames.
#[derive(Debug)]
pub struct SmpFreeChecker<M: Memory> {
    inner: M,
    smp: SmpTlbModel,
    violations: Vec<(usize, StaleTranslation)>,
}

impl<M: Memory> SmpFreeChecker<M> {
    /// Wraps `inner`, checking against `smp`.
    pub fn new(inner: M, smp: SmpTlbModel) -> Self {
        Self {
            inner,
            smp,
            violations: Vec::new(),
        }
    }

    /// Every stale entry found so far (CPU, entry), in the order of the frees.
    #[must_use]
    pub fn violations(&self) -> &[(usize, StaleTranslation)] {
        &self.violations
    }

    /// The wrapped memory.
    pub fn inner_mut(&mut self) -> &mut M {
        &mut self.inner
    }

    fn check(&mut self, pa: PhysAddr, frames: usize) {
        let found = self.smp.stale_entries(pa, frames);
        self.violations.extend(found);
    }
}

// SAFETY: allocation and `phys_to_virt` are forwarded to `M`, which upholds the contract;
// the checker only inspects frees.
unsafe impl<M: Memory> Memory for SmpFreeChecker<M> {
    fn allocate_frames(&mut self, count: usize, align: usize) -> Option<PhysAddr> {
        self.inner.allocate_frames(count, align)
    }

    fn free_frames(&mut self, pa: PhysAddr, count: usize) {
        self.check(pa, count);
        self.inner.free_frames(pa, count)
    }

    fn phys_to_virt(&self, pa: PhysAddr) -> NonNull<u8> {
        self.inner.phys_to_virt(pa)
    }

    fn free_table_frames(&mut self, pa: PhysAddr, count: usize) {
        self.check(pa, count);
        self.inner.free_table_frames(pa, count)
    }

    fn release_mapped(&mut self, va: VirtAddr, pa: PhysAddr, bytes: usize) {
        self.check(pa, bytes.div_ceil(PAGE_SIZE as usize));
        self.inner.release_mapped(va, pa, bytes)
    }

    fn release_mapped_run(&mut self, run: MappedRun) {
        self.check(run.pa, run.bytes().div_ceil(u64::from(PAGE_SIZE)) as usize);
        self.inner.release_mapped_run(run)
    }
}

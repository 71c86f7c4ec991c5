//! TLB shootdown by inter-processor interrupt: [`IpiTlb`], the backend for cores whose TLB
//! maintenance does not broadcast (no multiprocessing extensions, `ID_MMFR3` maintenance
//! broadcast below 2, `ACTLR.SMP`/`ACTLR.FW` clear and not settable, or a kernel that
//! simply prefers it).
//!
//! # The protocol
//!
//! A core without broadcast can only invalidate its *own* TLB. So every CPU that may hold
//! a translation of the address space has to run the invalidate itself, and the CPU that
//! changed the tables (the *initiator*) has to wait until each of them has, before it may
//! free anything that the old translations reached. Linux does this on ARM in
//! `arch/arm/kernel/smp_tlb.c` (`tlb_ops_need_broadcast`, `ipi_flush_tlb_*`): it calls
//! the local flush on each CPU in the `mm`'s cpumask with `on_each_cpu_mask(..., wait)`.
//! Here the same protocol is split between the crate and the kernel:
//!
//! ```text
//!  initiator (IpiTlb)                              each target CPU (kernel IRQ handler)
//!  ------------------                              -----------------------------------
//!  table writes (clear entries, unlink tables)
//!  prepare:   dsb ish                              (descriptor writes now visible to
//!                                                   every walker, and ordered before the
//!                                                   mask load below)
//!  invalidate_*: local TLBI*, and recorded in
//!             the FlushRequest (bounded, degrades
//!             to TLBIASID / TLBIALL when full)
//!  complete:  dsb nsh; isb (the local half)
//!             targets = space's CpuMask (or every
//!             online CPU for the kernel scope),
//!             minus this CPU
//!             transport.shootdown(targets, req) --> IPI
//!                                                   req.run_local(local backend):
//!                                                     dsb nshst; the same TLBI* locally;
//!                                                     dsb nsh; isb
//!                                                   ack (release store)
//!             ... waits for every ack (acquire) <--
//!  returns; the gather frees the frames
//! ```
//!
//! **Completion** means each target has issued its local invalidates *and* its `dsb nsh`
//! (which waits for them to finish) before acknowledging. An acknowledgement sent before
//! that barrier is worthless: the invalidates may still be in flight when the initiator
//! frees the frame. [`Mailbox`] is a ready-made request slot with that ordering (the
//! handler's [`Mailbox::handle`] acknowledges with a release store only after
//! [`FlushRequest::run_local`] returned, i.e. after the barrier; the initiator waits with
//! acquire loads); a kernel may use its own, as long as it keeps the same order.
//!
//! **The request** is a read-only, replayable list of what the batch asked for
//! ([`FlushOp`]), copied into the transport (targets must not read the initiator's
//! backend, which goes on to the next batch). It holds [`REQUEST_CAPACITY`] operations,
//! as many as the gather ever issues by VA before it falls back itself
//! ([`crate::gather::MAX_PENDING`]); past that it degrades the way the gather does: to one
//! TLBIASID when every operation was for one ASID (and the kernel trusts TLBIASID to drop
//! walk-cache entries, [`IpiTlb::with_asid_fallback`]), else to one TLBIALL. The
//! initiator's own TLB gets the exact operations.
//!
//! # Which CPUs: the per-space [`CpuMask`]
//!
//! Every CPU that has run the address space since it last proved it holds nothing of it.
//! A CPU sets its bit ([`CpuMask::enter`]) *before* it can walk the space's tables, that
//! is before its `TTBR0` write; the switch paths of the crate do it
//! (`crate::locked::LockedAddressSpace::activate` marks [`LockedAddressSpace::cpus`]
//! first), a kernel with its own switch calls `enter` itself. Bits are never cleared by
//! the crate (Linux keeps ARM's `mm_cpumask` bits set too): a CPU that switched away may
//! still hold entries under the space's ASID (a lazy switch keeps them, walk caches too).
//! [`CpuMask::forget`] is there for a kernel that knows a CPU flushed everything locally
//! (a TLBIALL while not running the space).
//!
//! Why that is sound with switches running concurrently with a shootdown: the initiator
//! writes descriptors, then `dsb ish`, then loads the mask; a switching CPU stores its bit
//! (a sequentially consistent read-modify-write, then `dsb ish` in [`CpuMask::enter`]),
//! then switches (`TTBR0` write, `isb`), then walks. That is the store-buffering pattern with a full barrier on both sides, so at
//! least one of them sees the other's store: either the mask load sees the bit (the CPU is
//! interrupted and invalidates), or the CPU's walks see the new descriptors (so it can
//! only cache the new translations). A CPU that sets its bit after the mask was loaded
//! walks the new tables. The kernel space ([`IpiTlb::kernel`]) is run by every CPU, so
//! its shootdowns go to every online CPU ([`IpiTransport::online`]).
//!
//! # What the kernel provides
//!
//! An [`IpiTransport`]: the current CPU's number, the online CPUs, and `shootdown`: make
//! every target run [`FlushRequest::run_local`] (with its local backend, e.g.
//! `Armv7Tlb::new(Cp15, Shareability::Local)`) and wait until each acknowledged. The
//! initiator spins in `shootdown`; if two CPUs can initiate at once, the one waiting must
//! keep taking IPIs (spin with IRQs enabled, or poll its own mailbox) or the two deadlock,
//! as in Linux, whose `smp_call_function` must not be called with IRQs disabled. The
//! boot test `tests/smp_ipi.rs` is a complete example on GICv2 software-generated
//! interrupts (SGIs through `GICD_SGIR`).
//!
//! Tested on the host SMP model (`crate::tlb::smp_model`, feature `tlb-model`: per-CPU
//! TLBs that apply invalidates only at the completion barrier, and a transport with
//! switchable faults), and on `-M virt -smp 4`, where QEMU's TLBs are per CPU and a local
//! TLBIMVA leaves the other CPUs' entries alone.
//!
//! [`LockedAddressSpace::cpus`]: crate::locked::LockedAddressSpace::cpus

use core::fmt;
use core::sync::atomic::{fence, Ordering};

use super::armv7::{Armv7Tlb, Insn, InsnSink};
use super::select::Shareability;
use super::{Asid, TlbBackend, TlbCounters};
use crate::addr::VirtAddr;

mod cpus;
mod mailbox;
mod request;

pub use cpus::{CpuMask, CpuOutOfRange, CpuSet, MAX_CPUS};
pub use mailbox::{Mailbox, Posted};
pub use request::{FlushOp, FlushRequest, REQUEST_CAPACITY};

/// How a kernel delivers shootdowns. See the module documentation.
pub trait IpiTransport {
    /// The number of the CPU this runs on.
    fn this_cpu(&self) -> usize;
    /// The CPUs that are up and take shootdown IPIs (the targets of a kernel-scope
    /// shootdown).
    fn online(&self) -> CpuSet;
    /// Makes every CPU in `targets` (never this one) run `request.run_local` with its
    /// local backend, and returns only when each has acknowledged *after* that returned
    /// (after its completion barrier).
    fn shootdown(&self, targets: CpuSet, request: &FlushRequest);
}

impl<T: IpiTransport + ?Sized> IpiTransport for &T {
    fn this_cpu(&self) -> usize {
        (**self).this_cpu()
    }
    fn online(&self) -> CpuSet {
        (**self).online()
    }
    fn shootdown(&self, targets: CpuSet, request: &FlushRequest) {
        (**self).shootdown(targets, request)
    }
}

/// The initiator's own TLB as [`IpiTlb`] drives it: a [`TlbBackend`] that can also open a
/// batch with the barrier remote walkers need.
pub trait IpiLocal: TlbBackend {
    /// Opens a batch like `prepare`, but with `dsb ish`: descriptor writes are then
    /// visible to every CPU's walker (not only this one's, `dsb nshst`), and ordered
    /// before the loads that follow (the CPU mask).
    fn prepare_for_remote(&mut self);
}

impl<S: InsnSink> IpiLocal for Armv7Tlb<S> {
    fn prepare_for_remote(&mut self) {
        self.sink_mut().issue(Insn::DsbIsh);
    }
}

impl<T: IpiLocal + ?Sized> IpiLocal for &mut T {
    fn prepare_for_remote(&mut self) {
        (**self).prepare_for_remote()
    }
}

/// What an [`IpiTlb`] sent.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct IpiStats {
    /// Batches that went to other CPUs (`shootdown` calls).
    pub shootdowns: u64,
    /// IPIs: target CPUs summed over the shootdowns.
    pub ipis: u64,
    /// Shootdowns whose request had degraded to one coarse operation.
    pub degraded: u64,
}

/// The IPI shootdown backend: local operations on this CPU, the same operations replayed
/// on every CPU of the space's [`CpuMask`] at `complete`. See the module documentation.
pub struct IpiTlb<'m, L: IpiLocal, T: IpiTransport> {
    local: L,
    transport: T,
    /// `None`: the kernel scope, every online CPU.
    cpus: Option<&'m CpuMask>,
    request: FlushRequest,
    counters: TlbCounters,
    stats: IpiStats,
}

impl<L: IpiLocal, T: IpiTransport> fmt::Debug for IpiTlb<'_, L, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IpiTlb")
            .field("cpus", &self.cpus.map(CpuMask::load))
            .field("request", &self.request)
            .field("counters", &self.counters)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<'m, S: InsnSink, T: IpiTransport> IpiTlb<'m, Armv7Tlb<S>, T> {
    /// The backend for one address space whose CPUs are `cpus`, issuing its local
    /// operations through `sink` (`Cp15` on ARM) in the non-broadcast form.
    pub fn new(sink: S, transport: T, cpus: &'m CpuMask) -> Self {
        Self::with_local(Armv7Tlb::new(sink, Shareability::Local), transport, cpus)
    }
}

impl<'m, L: IpiLocal, T: IpiTransport> IpiTlb<'m, L, T> {
    /// The backend for one address space whose CPUs are `cpus`, over any local backend
    /// (the host model's per-CPU TLB in tests).
    pub fn with_local(local: L, transport: T, cpus: &'m CpuMask) -> Self {
        Self {
            local,
            transport,
            cpus: Some(cpus),
            request: FlushRequest::new(),
            counters: TlbCounters::default(),
            stats: IpiStats::default(),
        }
    }

    /// The backend for the kernel space (global mappings, run by every CPU): shootdowns go
    /// to every online CPU.
    pub fn kernel(local: L, transport: T) -> Self {
        Self {
            local,
            transport,
            cpus: None,
            request: FlushRequest::new(),
            counters: TlbCounters::default(),
            stats: IpiStats::default(),
        }
    }

    /// The same backend degrading a full request per ASID (`true`, the default) or always
    /// to TLBIALL (`false`: match `GatherConfig::asid_flush_drops_walk_cache` off).
    #[must_use]
    pub fn with_asid_fallback(mut self, asid_fallback: bool) -> Self {
        self.request = FlushRequest::with_asid_fallback(asid_fallback);
        self
    }

    /// What was sent to other CPUs so far.
    #[must_use]
    pub const fn ipi_stats(&self) -> IpiStats {
        self.stats
    }

    /// The local backend.
    #[must_use]
    pub const fn local(&self) -> &L {
        &self.local
    }

    /// The local backend, mutably.
    pub fn local_mut(&mut self) -> &mut L {
        &mut self.local
    }

    /// The transport.
    #[must_use]
    pub const fn transport(&self) -> &T {
        &self.transport
    }

    /// The CPUs a shootdown now would interrupt.
    #[must_use]
    pub fn targets(&self) -> CpuSet {
        let online = self.transport.online();
        let marked = self.cpus.map_or(online, CpuMask::load);
        marked.and(online).without(self.transport.this_cpu())
    }
}

impl<L: IpiLocal, T: IpiTransport> TlbBackend for IpiTlb<'_, L, T> {
    fn prepare(&mut self) {
        self.counters.prepares += 1;
        self.request.clear();
        self.local.prepare_for_remote();
        // The mask is loaded (at `complete`) only after this.
        fence(Ordering::SeqCst);
    }

    fn invalidate_va(&mut self, va: VirtAddr, asid: Asid) {
        self.counters.va += 1;
        self.local.invalidate_va(va, asid);
        self.request.push(FlushOp::Va(va, asid));
    }

    fn invalidate_va_all_asids(&mut self, va: VirtAddr) {
        self.counters.va_all_asids += 1;
        self.local.invalidate_va_all_asids(va);
        self.request.push(FlushOp::VaAllAsids(va));
    }

    fn invalidate_asid(&mut self, asid: Asid) {
        self.counters.asid += 1;
        self.local.invalidate_asid(asid);
        self.request.push(FlushOp::Asid(asid));
    }

    fn invalidate_all(&mut self) {
        self.counters.all += 1;
        self.local.invalidate_all();
        self.request.push(FlushOp::All);
    }

    fn invalidate_branch_predictor(&mut self) {
        self.counters.branch_predictor += 1;
        self.local.invalidate_branch_predictor();
        self.request.push_branch_predictor();
    }

    fn complete(&mut self) {
        self.counters.completions += 1;
        self.local.complete();
        if !self.request.is_empty() {
            let targets = self.targets();
            if !targets.is_empty() {
                self.stats.shootdowns += 1;
                self.stats.ipis += u64::from(targets.len());
                self.stats.degraded += u64::from(self.request.degraded());
                self.transport.shootdown(targets, &self.request);
            }
        }
        self.request.clear();
    }

    fn counters(&self) -> TlbCounters {
        self.counters
    }
}

#[cfg(test)]
#[path = "ipi_tests.rs"]
mod tests;

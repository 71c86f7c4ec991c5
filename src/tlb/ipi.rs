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

use core::cell::UnsafeCell;
use core::fmt;
use core::sync::atomic::{fence, AtomicBool, AtomicU32, Ordering};

use super::armv7::{Armv7Tlb, Insn, InsnSink};
use super::select::Shareability;
use super::{Asid, TlbBackend, TlbCounters};
use crate::addr::VirtAddr;

/// Most CPUs a [`CpuSet`] / [`CpuMask`] names (one bit each in a 32-bit word).
pub const MAX_CPUS: usize = 32;

/// Most operations a [`FlushRequest`] records before it degrades (as many as one gather
/// flush issues by VA, [`crate::gather::MAX_PENDING`]).
pub const REQUEST_CAPACITY: usize = crate::gather::MAX_PENDING;

/// A CPU number that does not fit a [`CpuSet`] (`cpu >= MAX_CPUS`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct CpuOutOfRange(pub usize);

impl fmt::Display for CpuOutOfRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CPU {} is out of range (at most {MAX_CPUS} CPUs)",
            self.0
        )
    }
}

/// A set of CPU numbers (bit `n` = CPU `n`), as a value.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct CpuSet(pub u32);

impl CpuSet {
    /// No CPU.
    pub const EMPTY: CpuSet = CpuSet(0);

    /// CPUs `0..n` (all 32 for `n >= 32`).
    #[must_use]
    pub const fn first(n: usize) -> CpuSet {
        if n >= MAX_CPUS {
            CpuSet(u32::MAX)
        } else {
            CpuSet((1u32 << n) - 1)
        }
    }

    /// The set with `cpu` only.
    ///
    /// # Errors
    /// [`CpuOutOfRange`] when `cpu >= MAX_CPUS`.
    pub const fn single(cpu: usize) -> Result<CpuSet, CpuOutOfRange> {
        if cpu >= MAX_CPUS {
            Err(CpuOutOfRange(cpu))
        } else {
            Ok(CpuSet(1 << cpu))
        }
    }

    /// Whether `cpu` is in the set (false for out-of-range numbers).
    #[must_use]
    pub const fn contains(self, cpu: usize) -> bool {
        cpu < MAX_CPUS && self.0 & (1 << cpu) != 0
    }

    /// The set without `cpu` (unchanged for out-of-range numbers).
    #[must_use]
    pub const fn without(self, cpu: usize) -> CpuSet {
        if cpu >= MAX_CPUS {
            self
        } else {
            CpuSet(self.0 & !(1 << cpu))
        }
    }

    /// The CPUs in both sets.
    #[must_use]
    pub const fn and(self, other: CpuSet) -> CpuSet {
        CpuSet(self.0 & other.0)
    }

    /// Whether the set is empty.
    #[must_use]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// How many CPUs are in the set.
    #[must_use]
    pub const fn len(self) -> u32 {
        self.0.count_ones()
    }

    /// The CPU numbers in the set, lowest first.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        (0..MAX_CPUS).filter(move |&c| self.contains(c))
    }
}

/// The CPUs that may hold translations of one address space: set by a CPU before it walks
/// the space's tables, read by the initiator of a shootdown after its `dsb ish` (see the
/// module documentation for why that is sound under concurrent switches).
#[derive(Debug, Default)]
pub struct CpuMask(AtomicU32);

impl CpuMask {
    /// No CPU has run the space.
    #[must_use]
    pub const fn new() -> Self {
        Self(AtomicU32::new(0))
    }

    /// Marks `cpu` as running the space. Call it before the CPU can walk the space's
    /// tables (before its `TTBR0` write); the crate's switch paths do.
    ///
    /// # Errors
    /// [`CpuOutOfRange`] when `cpu >= MAX_CPUS` (nothing is changed).
    pub fn enter(&self, cpu: usize) -> Result<(), CpuOutOfRange> {
        let bit = CpuSet::single(cpu)?;
        self.0.fetch_or(bit.0, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        // A `dmb` orders explicit accesses only; the store must also complete before any
        // table walk the switch lets happen.
        #[cfg(target_arch = "arm")]
        crate::arch::barrier::dsb_ish();
        Ok(())
    }

    /// Forgets `cpu`: only for a CPU that has invalidated its whole TLB (TLBIALL, `dsb
    /// nsh`) while not running the space, so that it holds nothing of it.
    pub fn forget(&self, cpu: usize) {
        if let Ok(bit) = CpuSet::single(cpu) {
            self.0.fetch_and(!bit.0, Ordering::SeqCst);
        }
    }

    /// The CPUs marked now.
    #[must_use]
    pub fn load(&self) -> CpuSet {
        fence(Ordering::SeqCst);
        CpuSet(self.0.load(Ordering::SeqCst))
    }
}

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
        self.run_local(&mut Armv7Tlb::new(super::Cp15, Shareability::Local));
    }
}

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

/// A one-request mailbox with the acknowledgement ordering [`IpiTransport::shootdown`]
/// needs: a kernel's transport posts the request, sends its IPIs and waits; each target's
/// IPI handler calls [`Mailbox::handle`].
///
/// One shootdown at a time: [`Mailbox::post`] spins while another initiator's request is
/// out (keep taking IPIs while it spins, see the module documentation).
#[derive(Debug)]
pub struct Mailbox {
    busy: AtomicBool,
    /// Targets that have not acknowledged yet.
    pending: AtomicU32,
    request: UnsafeCell<FlushRequest>,
    handled: AtomicU32,
    /// Mutant (tests only): acknowledge before the local replay.
    #[cfg(test)]
    ack_early: bool,
}

// SAFETY: `request` is written only by the holder of `busy` while `pending` is 0 (no
// handler reads it), and read by a handler only while its bit is set in `pending`, which
// the writer sets (release) after the write and waits to see cleared (acquire) before it
// releases `busy`; the handler clears its bit (release) after its last read.
unsafe impl Sync for Mailbox {}

impl Default for Mailbox {
    fn default() -> Self {
        Self::new()
    }
}

/// A posted request; [`Posted::wait`] waits for every acknowledgement.
#[must_use = "a posted request must be waited for before it is reused or anything is freed"]
#[derive(Debug)]
pub struct Posted<'a> {
    mailbox: &'a Mailbox,
}

impl Mailbox {
    /// An empty mailbox.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            busy: AtomicBool::new(false),
            pending: AtomicU32::new(0),
            request: UnsafeCell::new(FlushRequest::new()),
            handled: AtomicU32::new(0),
            #[cfg(test)]
            ack_early: false,
        }
    }

    /// The mutant whose handlers acknowledge before their local replay (tests only).
    #[cfg(test)]
    const fn acking_early() -> Self {
        let mut m = Self::new();
        m.ack_early = true;
        m
    }

    /// Puts `request` out for `targets` (send the IPIs after this, then
    /// [`Posted::wait`]).
    pub fn post(&self, targets: CpuSet, request: &FlushRequest) -> Posted<'_> {
        while self
            .busy
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        // SAFETY: we hold `busy` and the previous holder saw `pending` == 0 before it
        // released it: no handler reads the request now (see the `Sync` impl).
        unsafe { *self.request.get() = *request };
        self.pending.store(targets.0, Ordering::Release);
        Posted { mailbox: self }
    }

    /// The IPI handler's part on CPU `cpu`: if a request is out for it, replay it on
    /// `local` ([`FlushRequest::run_local`], barrier included), *then* acknowledge.
    /// Returns whether there was one (false for a spurious or repeated IPI).
    pub fn handle<B: TlbBackend + ?Sized>(&self, cpu: usize, local: &mut B) -> bool {
        let Ok(bit) = CpuSet::single(cpu) else {
            return false;
        };
        if self.pending.load(Ordering::Acquire) & bit.0 == 0 {
            return false;
        }
        // SAFETY: our bit is set, so the request was written before (acquire above) and
        // will not be rewritten until we clear it (see the `Sync` impl).
        let request = unsafe { &*self.request.get() };
        #[cfg(test)]
        if self.ack_early {
            // The bug: the initiator may go on (and free) while we still invalidate. The
            // copy keeps the mutant itself free of data races.
            let copy = *request;
            self.pending.fetch_and(!bit.0, Ordering::Release);
            copy.run_local(local);
            self.handled.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        request.run_local(local);
        self.handled.fetch_add(1, Ordering::Relaxed);
        // The acknowledgement: after the local completion barrier, and after our last
        // read of the request.
        self.pending.fetch_and(!bit.0, Ordering::Release);
        true
    }

    /// Requests handled so far (all CPUs).
    #[must_use]
    pub fn handled(&self) -> u32 {
        self.handled.load(Ordering::Relaxed)
    }

    /// The targets that have not acknowledged yet.
    #[must_use]
    pub fn pending(&self) -> CpuSet {
        CpuSet(self.pending.load(Ordering::Acquire))
    }
}

impl Posted<'_> {
    /// Spins until every target acknowledged; the mailbox is free again when it returns.
    /// (Dropping a `Posted` waits the same way.)
    pub fn wait(self) {
        drop(self);
    }
}

impl Drop for Posted<'_> {
    fn drop(&mut self) {
        while self.mailbox.pending.load(Ordering::Acquire) != 0 {
            core::hint::spin_loop();
        }
        self.mailbox.busy.store(false, Ordering::Release);
    }
}

#[cfg(test)]
#[path = "ipi_tests.rs"]
mod tests;

//! Tests of the IPI shootdown backend: the request and its degrading, the exact local
//! sequences, the targets, the mailbox's ordering; and (feature `tlb-model`) randomized
//! gathers over four model CPUs with teeth.

use std::cell::RefCell;
use std::vec;
use std::vec::Vec;

use super::*;
use crate::tlb::armv7::Recorder;
use Insn::*;

fn va(a: u32) -> VirtAddr {
    VirtAddr::new(a)
}

/// A transport that records what it was asked and replays on per-CPU recorders.
struct Recording {
    me: usize,
    online: CpuSet,
    calls: RefCell<Vec<(CpuSet, Vec<FlushOp>, bool)>>,
    remote: RefCell<Vec<Insn>>,
}

impl Recording {
    fn new(me: usize, cpus: usize) -> Self {
        Self {
            me,
            online: CpuSet::first(cpus),
            calls: RefCell::new(Vec::new()),
            remote: RefCell::new(Vec::new()),
        }
    }
}

impl IpiTransport for Recording {
    fn this_cpu(&self) -> usize {
        self.me
    }
    fn online(&self) -> CpuSet {
        self.online
    }
    fn shootdown(&self, targets: CpuSet, request: &FlushRequest) {
        self.calls.borrow_mut().push((
            targets,
            request.ops().collect(),
            request.branch_predictor(),
        ));
        let mut local = Armv7Tlb::new(Recorder::default(), Shareability::Local);
        request.run_local(&mut local);
        self.remote
            .borrow_mut()
            .extend(local.sink().log.iter().copied());
    }
}

#[test]
fn cpu_sets_and_masks_refuse_out_of_range_cpus() {
    assert_eq!(CpuSet::single(32), Err(CpuOutOfRange(32)));
    assert_eq!(CpuSet::first(4), CpuSet(0xf));
    assert_eq!(CpuSet::first(40), CpuSet(u32::MAX));
    assert!(!CpuSet(u32::MAX).contains(99));
    let m = CpuMask::new();
    assert_eq!(m.enter(32), Err(CpuOutOfRange(32)));
    m.enter(3).unwrap();
    m.enter(1).unwrap();
    assert_eq!(m.load().iter().collect::<Vec<_>>(), vec![1, 3]);
    m.forget(3);
    m.forget(77);
    assert_eq!(m.load(), CpuSet(0b10));
}

#[test]
fn request_degrades_like_the_gather() {
    // Full of one ASID: one TLBIASID.
    let mut r = FlushRequest::new();
    for i in 0..REQUEST_CAPACITY as u32 {
        r.push(FlushOp::Va(va(i << 12), Asid(4)));
    }
    assert!(!r.degraded());
    assert_eq!(r.ops().count(), REQUEST_CAPACITY);
    r.push(FlushOp::Va(va(0x9000_0000), Asid(4)));
    assert!(r.degraded());
    assert_eq!(r.ops().collect::<Vec<_>>(), vec![FlushOp::Asid(Asid(4))]);
    // More of the same ASID keeps it; anything else makes it TLBIALL.
    r.push(FlushOp::Asid(Asid(4)));
    assert_eq!(r.ops().collect::<Vec<_>>(), vec![FlushOp::Asid(Asid(4))]);
    r.push(FlushOp::Va(va(0), Asid(5)));
    assert_eq!(r.ops().collect::<Vec<_>>(), vec![FlushOp::All]);
    // Two ASIDs, or an all-ASID form, or the knob off: TLBIALL.
    for last in [FlushOp::Va(va(0), Asid(5)), FlushOp::VaAllAsids(va(0))] {
        let mut r = FlushRequest::new();
        for i in 0..REQUEST_CAPACITY as u32 {
            r.push(FlushOp::Va(va(i << 12), Asid(4)));
        }
        r.push(last);
        assert_eq!(r.ops().collect::<Vec<_>>(), vec![FlushOp::All]);
    }
    let mut r = FlushRequest::with_asid_fallback(false);
    for i in 0..=REQUEST_CAPACITY as u32 {
        r.push(FlushOp::Va(va(i << 12), Asid(4)));
    }
    assert_eq!(r.ops().collect::<Vec<_>>(), vec![FlushOp::All]);
    // TLBIALL replaces the list at once; clear empties it.
    let mut r = FlushRequest::new();
    r.push(FlushOp::Va(va(0x1000), Asid(1)));
    r.push(FlushOp::All);
    r.push(FlushOp::Asid(Asid(2)));
    assert_eq!(r.ops().collect::<Vec<_>>(), vec![FlushOp::All]);
    r.push_branch_predictor();
    r.clear();
    assert!(r.is_empty());
}

#[test]
fn run_local_is_one_local_batch_with_its_barrier() {
    let mut r = FlushRequest::new();
    r.push(FlushOp::Va(va(0x1234_5678), Asid(7)));
    r.push(FlushOp::VaAllAsids(va(0xC000_1FFF)));
    r.push(FlushOp::Asid(Asid(9)));
    r.push_branch_predictor();
    let mut local = Armv7Tlb::new(Recorder::default(), Shareability::Local);
    r.run_local(&mut local);
    assert_eq!(
        local.sink().log,
        vec![
            DsbNshst,
            Tlbimva(0x1234_5007),
            Tlbimvaa(0xC000_1000),
            Tlbiasid(9),
            Bpiall,
            DsbNsh,
            Isb
        ]
    );
}

#[test]
fn batch_is_dsb_ish_local_ops_then_the_same_ops_on_the_masks_other_cpus() {
    let mask = CpuMask::new();
    for c in [0, 2, 3] {
        mask.enter(c).unwrap();
    }
    let t = Recording::new(2, 4);
    let mut b = IpiTlb::new(Recorder::default(), &t, &mask);
    b.prepare();
    b.invalidate_va(va(0x4000), Asid(3));
    b.invalidate_va(va(0x5000), Asid(3));
    b.invalidate_branch_predictor();
    b.complete();
    assert_eq!(
        b.local().sink().log,
        vec![
            DsbIsh,
            Tlbimva(0x4003),
            Tlbimva(0x5003),
            Bpiall,
            DsbNsh,
            Isb
        ]
    );
    let calls = t.calls.borrow();
    assert_eq!(calls.len(), 1);
    // CPUs 0 and 3: not the initiator (2), not CPU 1 (never ran the space).
    assert_eq!(calls[0].0, CpuSet(0b1001));
    assert_eq!(
        calls[0].1,
        vec![
            FlushOp::Va(va(0x4000), Asid(3)),
            FlushOp::Va(va(0x5000), Asid(3))
        ]
    );
    assert!(calls[0].2);
    assert_eq!(
        *t.remote.borrow(),
        vec![
            DsbNshst,
            Tlbimva(0x4003),
            Tlbimva(0x5003),
            Bpiall,
            DsbNsh,
            Isb
        ]
    );
    let s = b.ipi_stats();
    assert_eq!((s.shootdowns, s.ipis, s.degraded), (1, 2, 0));
    let c = b.counters();
    assert_eq!(
        (c.va, c.branch_predictor, c.prepares, c.completions),
        (2, 1, 1, 1)
    );
}

#[test]
fn empty_batches_and_lone_cpus_send_nothing() {
    let mask = CpuMask::new();
    mask.enter(0).unwrap();
    let t = Recording::new(0, 4);
    let mut b = IpiTlb::new(Recorder::default(), &t, &mask);
    // Nothing asked for.
    b.prepare();
    b.complete();
    // Only this CPU ran the space.
    b.prepare();
    b.invalidate_asid(Asid(1));
    b.complete();
    assert!(t.calls.borrow().is_empty());
    assert_eq!(b.ipi_stats(), IpiStats::default());
    // A CPU that switched in since: interrupted on the next batch.
    mask.enter(1).unwrap();
    b.prepare();
    b.invalidate_asid(Asid(1));
    b.complete();
    assert_eq!(t.calls.borrow()[0].0, CpuSet(0b10));
}

#[test]
fn kernel_scope_goes_to_every_online_cpu() {
    let t = Recording::new(1, 3);
    let local = Armv7Tlb::new(Recorder::default(), Shareability::Local);
    let mut b = IpiTlb::kernel(local, &t);
    b.prepare();
    b.invalidate_va_all_asids(va(0xC000_0000));
    b.complete();
    assert_eq!(t.calls.borrow()[0].0, CpuSet(0b101));
}

#[test]
fn a_degraded_request_is_counted_and_the_initiator_gets_the_exact_ops() {
    let mask = CpuMask::new();
    mask.enter(1).unwrap();
    let t = Recording::new(0, 2);
    let mut b = IpiTlb::new(Recorder::default(), &t, &mask);
    b.prepare();
    for i in 0..=REQUEST_CAPACITY as u32 {
        b.invalidate_va(va(i << 12), Asid(2));
    }
    b.complete();
    assert_eq!(b.local().counters().va, REQUEST_CAPACITY as u64 + 1);
    assert_eq!(t.calls.borrow()[0].1, vec![FlushOp::Asid(Asid(2))]);
    assert_eq!(b.ipi_stats().degraded, 1);
}

/// A local backend that checks, at its completion barrier, that its CPU has not been
/// acknowledged yet: the acknowledgement must come after the barrier.
struct AckAfterBarrier<'a> {
    mailbox: &'a Mailbox,
    cpu: usize,
    completions: u32,
}

impl TlbBackend for AckAfterBarrier<'_> {
    fn prepare(&mut self) {}
    fn invalidate_va(&mut self, _: VirtAddr, _: Asid) {}
    fn invalidate_va_all_asids(&mut self, _: VirtAddr) {}
    fn invalidate_asid(&mut self, _: Asid) {}
    fn invalidate_all(&mut self) {}
    fn invalidate_branch_predictor(&mut self) {}
    fn complete(&mut self) {
        assert!(
            self.mailbox.pending().contains(self.cpu),
            "acknowledged before the completion barrier"
        );
        self.completions += 1;
    }
    fn counters(&self) -> TlbCounters {
        TlbCounters::default()
    }
}

/// Three handler threads (CPUs 1-3) serve `mailbox` while this thread posts up to
/// `rounds` requests to them; returns each handler's completions, or the first handler's
/// panic message.
fn serve(mailbox: &'static Mailbox, rounds: u32) -> Result<Vec<u32>, std::string::String> {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    let stop = Arc::new(AtomicBool::new(false));
    let handlers: Vec<_> = (1..4)
        .map(|cpu| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut local = AckAfterBarrier {
                    mailbox,
                    cpu,
                    completions: 0,
                };
                while !stop.load(Ordering::SeqCst) {
                    mailbox.handle(cpu, &mut local);
                    std::thread::yield_now();
                }
                local.completions
            })
        })
        .collect();
    let mut r = FlushRequest::new();
    r.push(FlushOp::Asid(Asid(1)));
    let dead = |hs: &[std::thread::JoinHandle<u32>]| hs.iter().any(|h| h.is_finished());
    for _ in 0..rounds {
        if dead(&handlers) {
            break;
        }
        let posted = mailbox.post(CpuSet(0b1110), &r);
        // A handler that panicked never acknowledges: stop waiting for it.
        while !mailbox.pending().is_empty() && !dead(&handlers) {
            std::thread::yield_now();
        }
        if !mailbox.pending().is_empty() {
            core::mem::forget(posted);
            break;
        }
        posted.wait();
    }
    stop.store(true, Ordering::SeqCst);
    let mut done = Vec::new();
    for h in handlers {
        match h.join() {
            Ok(n) => done.push(n),
            Err(e) => {
                let msg = e
                    .downcast_ref::<&str>()
                    .map(|s| std::string::String::from(*s))
                    .or_else(|| e.downcast_ref::<std::string::String>().cloned())
                    .unwrap_or_default();
                return Err(msg);
            }
        }
    }
    Ok(done)
}

#[test]
fn mailbox_acknowledges_after_the_barrier_and_the_initiator_waits_for_all() {
    static MAILBOX: Mailbox = Mailbox::new();
    assert_eq!(serve(&MAILBOX, 200), Ok(vec![200, 200, 200]));
    assert_eq!(MAILBOX.handled(), 600);
    assert!(MAILBOX.pending().is_empty());
    // Not a target: a spurious IPI does nothing.
    let mut local = Armv7Tlb::new(Recorder::default(), Shareability::Local);
    assert!(!MAILBOX.handle(0, &mut local));
    assert!(local.sink().log.is_empty());
}

#[test]
fn teeth_a_mailbox_that_acknowledges_before_the_barrier_is_caught() {
    static EARLY: Mailbox = Mailbox::acking_early();
    let r = serve(&EARLY, 200);
    assert!(
        r.as_ref()
            .is_err_and(|m| m.contains("acknowledged before the completion barrier")),
        "{r:?}"
    );
}

#[cfg(feature = "tlb-model")]
mod smp {
    use std::format;
    use std::string::String;

    use super::*;
    use crate::addr::{PhysAddr, VirtRange};
    use crate::gather::{InFlight, MmuGather, Scope};
    use crate::memory::Memory;
    use crate::short::host::HostMemory;
    use crate::short::{Attributes, Layout, Short};
    use crate::sink::MapSize;
    use crate::tlb::smp_model::{SmpFreeChecker, SmpTlbModel, TransportFault};

    type Space = crate::table::AddressSpace<Short, HostMemory>;

    const CPUS: usize = 4;
    const ASID: Asid = Asid(9);
    const MIB: u64 = 1 << 20;
    const BASE: u64 = 0x1000_0000;
    /// The window of the kernel-space runs (`TTBR1` half of `TTBCR.N = 1`).
    const KERNEL_BASE: u64 = 0x9000_0000;
    /// 16 MiB: four 4 MiB groups, sixteen 1 MiB regions.
    const WINDOW: u64 = 16 * MIB;

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn range(start: u64, len: u64) -> VirtRange {
        VirtRange::from_start_len(VirtAddr::new(start as u32), len).unwrap()
    }

    /// A bug switched on for one run.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum Bug {
        None,
        Transport(TransportFault),
        /// This CPU runs the space without marking itself in the mask.
        NoMark(usize),
        /// No bug: the kernel space (global leaves, every CPU, any ASID), kernel scope.
        Kernel,
        /// The kernel space's shootdowns sent to a space mask (only the CPUs that changed
        /// its tables) instead of every online CPU.
        KernelToMask,
    }

    #[derive(Debug, Default)]
    struct Outcome {
        violations: Vec<String>,
        gathers: u64,
        ipis: u64,
        shootdowns: u64,
        accesses: u64,
        frees: u64,
    }

    /// Random maps, accesses from random CPUs (each marking itself before it walks, unless
    /// the bug says otherwise), unmaps and table frees through gathers on random CPUs over
    /// the IPI backend. Every free is checked against every CPU's TLB.
    fn run(seed: u64, steps: usize, bug: Bug) -> Outcome {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let kernel = matches!(bug, Bug::Kernel | Bug::KernelToMask);
        let base = if kernel { KERNEL_BASE } else { BASE };
        let mem = HostMemory::new();
        let mut space = Space::new(
            mem.clone(),
            if kernel {
                Layout::Kernel { n: 1 }
            } else {
                Layout::User { n: 1 }
            },
            crate::short::Features::ALL,
        )
        .expect("root");
        let smp = SmpTlbModel::new(CPUS);
        let mask = CpuMask::new();
        let in_flight = InFlight::new();
        let mut checker = SmpFreeChecker::new(mem.clone(), smp.clone());
        let mut out = Outcome::default();
        let mut mapped: Vec<u64> = Vec::new();
        let fault = match bug {
            Bug::Transport(f) => f,
            _ => TransportFault::None,
        };
        let mut step = 0;
        while step < steps {
            let initiator = rng.below(CPUS as u64) as usize;
            // The initiator runs the space too (it changes its tables).
            if bug != Bug::NoMark(initiator) {
                mask.enter(initiator).unwrap();
            }
            let (local, transport) = (smp.local(initiator), smp.transport(initiator, fault));
            let (backend, scope) = match bug {
                Bug::Kernel => (IpiTlb::kernel(local, transport), Scope::Kernel),
                Bug::KernelToMask => (IpiTlb::with_local(local, transport, &mask), Scope::Kernel),
                _ => (
                    IpiTlb::with_local(local, transport, &mask),
                    Scope::Asid(ASID),
                ),
            };
            let mut g = MmuGather::new(scope, backend, &mut checker, &in_flight);
            let ops = 1 + rng.below(10);
            for _ in 0..ops {
                step += 1;
                match rng.below(10) {
                    0..=2 => {
                        // Map a few pages, each to its own frame.
                        let start = base + rng.below(WINDOW / 4096) * 4096;
                        for p in 0..1 + rng.below(6) {
                            let v = start + p * 4096;
                            if v >= base + WINDOW {
                                break;
                            }
                            let mut m = mem.clone();
                            let Some(pa) = m.allocate_frames(1, 4096) else {
                                break;
                            };
                            let attrs = if kernel {
                                Attributes::KERNEL_DATA
                            } else {
                                Attributes::USER_DATA
                            };
                            if space
                                .map(range(v, 4096), pa, attrs, MapSize::Page4K)
                                .is_ok()
                            {
                                mapped.push(v);
                            } else {
                                m.free_frames(pa, 1);
                            }
                        }
                    }
                    3..=5 => {
                        // A CPU switches in (marks itself) and reads mapped pages and
                        // random ones (walks through tables, faults cache nothing).
                        let cpu = rng.below(CPUS as u64) as usize;
                        // Every CPU runs the kernel space, under any ASID.
                        let asid = if kernel {
                            Asid(1 + rng.below(4) as u8)
                        } else {
                            ASID
                        };
                        if !kernel && bug != Bug::NoMark(cpu) {
                            mask.enter(cpu).unwrap();
                        }
                        for _ in 0..1 + rng.below(8) {
                            let v = if !mapped.is_empty() && rng.below(4) != 0 {
                                mapped[rng.below(mapped.len() as u64) as usize]
                            } else {
                                base + rng.below(WINDOW / 4096) * 4096
                            };
                            smp.access(cpu, VirtAddr::new(v as u32), asid, &space);
                            out.accesses += 1;
                        }
                    }
                    6 | 7 => {
                        let start = base + rng.below(WINDOW / 4096) * 4096;
                        let len = (4096 * (1 + rng.below(512))).min(base + WINDOW - start);
                        let _ = space.unmap(range(start, len), &mut g);
                        mapped.retain(|&v| v < start || v >= start + len);
                    }
                    8 => {
                        let group = rng.below(4);
                        let start = base + group * 4 * MIB;
                        let len = 4 * MIB * (1 + rng.below(4 - group));
                        let _ = space.unmap(range(start, len), &mut g);
                        mapped.retain(|&v| v < start || v >= start + len);
                        let _ = space.free_tables(
                            range(start, len),
                            VirtRange::floor_ceiling(VirtAddr::new(base as u32), base + WINDOW),
                            &mut g,
                        );
                    }
                    _ => g.flush(),
                }
            }
            let report = g.finish();
            out.gathers += 1;
            out.frees += u64::from(report.table_frames_freed) + u64::from(report.leaves_cleared);
            // Late barriers (a faulty target) land now, after the frees were checked.
            smp.settle();
        }
        out.ipis = smp.delivered();
        out.shootdowns = out.gathers;
        out.violations = checker
            .violations()
            .iter()
            .map(|(cpu, v)| format!("cpu {cpu}: {v}"))
            .collect();
        out
    }

    const SEEDS: u64 = 60;
    const STEPS: usize = 300;

    #[test]
    fn random_gathers_over_ipis_leave_no_freed_frame_reachable_on_any_cpu() {
        let mut total = Outcome::default();
        for seed in 0..SEEDS {
            let o = run(seed, STEPS, Bug::None);
            assert!(o.violations.is_empty(), "seed {seed}: {}", o.violations[0]);
            total.ipis += o.ipis;
            total.gathers += o.gathers;
            total.accesses += o.accesses;
            total.frees += o.frees;
        }
        // The scenario does what it claims: frees, remote CPUs with entries, IPIs.
        assert!(total.frees > 1000, "{total:?}");
        assert!(total.ipis > total.gathers, "{total:?}");
        std::println!(
            "ipi model: {} gathers, {} accesses, {} frames/leaves freed, {} IPIs",
            total.gathers,
            total.accesses,
            total.frees,
            total.ipis
        );
    }

    /// How many of the seeds catch `bug` (each run checks every free on every CPU).
    fn caught(bug: Bug) -> u64 {
        let n = (0..SEEDS)
            .filter(|&seed| !run(seed, STEPS, bug).violations.is_empty())
            .count() as u64;
        std::println!("{bug:?}: caught in {n} of {SEEDS} runs");
        n
    }

    #[test]
    fn random_kernel_space_gathers_reach_every_online_cpu() {
        for seed in 0..SEEDS / 2 {
            let o = run(seed, STEPS, Bug::Kernel);
            assert!(o.violations.is_empty(), "seed {seed}: {}", o.violations[0]);
        }
    }

    #[test]
    fn teeth_kernel_shootdowns_to_a_space_mask_are_caught() {
        let n = caught(Bug::KernelToMask);
        assert!(n >= SEEDS / 2, "caught in {n} of {SEEDS} runs");
    }

    #[test]
    fn teeth_a_target_that_skips_its_local_invalidates_is_caught() {
        let n = caught(Bug::Transport(TransportFault::SkipLocal(2)));
        assert!(n >= SEEDS / 2, "caught in {n} of {SEEDS} runs");
    }

    #[test]
    fn teeth_an_ack_before_the_completion_barrier_is_caught() {
        let n = caught(Bug::Transport(TransportFault::AckBeforeBarrier));
        assert!(n >= SEEDS / 2, "caught in {n} of {SEEDS} runs");
        // And the entries were live only because the barrier was late.
        let o = run(0, STEPS, Bug::Transport(TransportFault::AckBeforeBarrier));
        assert!(
            o.violations
                .iter()
                .any(|v| v.contains("batch was not completed")),
            "{:?}",
            o.violations.first()
        );
    }

    #[test]
    fn teeth_a_cpu_left_out_of_the_targets_is_caught() {
        let n = caught(Bug::Transport(TransportFault::LeaveOut(1)));
        assert!(n >= SEEDS / 2, "caught in {n} of {SEEDS} runs");
    }

    #[test]
    fn teeth_a_cpu_that_runs_the_space_without_marking_itself_is_caught() {
        let n = caught(Bug::NoMark(3));
        assert!(n >= SEEDS / 2, "caught in {n} of {SEEDS} runs");
    }

    #[test]
    fn a_cpu_switching_in_during_an_open_gather_is_interrupted() {
        // CPU 1 marks itself and loads an entry after the unmap cleared it from the
        // tables' point of view but before complete read the mask: it must be a target.
        let mem = HostMemory::new();
        let mut space = Space::new(
            mem.clone(),
            Layout::User { n: 1 },
            crate::short::Features::ALL,
        )
        .expect("root");
        let smp = SmpTlbModel::new(2);
        let mask = CpuMask::new();
        mask.enter(0).unwrap();
        let in_flight = InFlight::new();
        let mut checker = SmpFreeChecker::new(mem.clone(), smp.clone());
        let v = BASE + 0x5000;
        let pa: PhysAddr = mem.clone().allocate_frames(1, 4096).unwrap();
        space
            .map(range(v, 4096), pa, Attributes::USER_DATA, MapSize::Page4K)
            .unwrap();
        let backend =
            IpiTlb::with_local(smp.local(0), smp.transport(0, TransportFault::None), &mask);
        let mut g = MmuGather::new(Scope::Asid(ASID), backend, &mut checker, &in_flight);
        // CPU 1 runs the space and caches the page while the gather is open.
        mask.enter(1).unwrap();
        assert!(smp
            .access(1, VirtAddr::new(v as u32), ASID, &space)
            .is_some());
        space.unmap(range(v, 4096), &mut g).unwrap();
        g.finish();
        assert!(
            checker.violations().is_empty(),
            "{:?}",
            checker.violations()
        );
        assert_eq!(smp.delivered(), 1);
        assert!(smp.with_cpu(1, |t| t.leaves().is_empty()));
    }
}

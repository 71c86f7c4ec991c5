//! qemu: cpu=cortex-a15,cortex-a7 smp=4 mem=128
//! timeout: 180
//! variant: skip_local arg=ipibug=skip_local arg=case=ipi expect=fail "STALE"
//! variant: miss_cpu arg=ipibug=miss_cpu arg=case=ipi expect=fail "STALE"
//! variant: clear_on_park arg=ipibug=clear_on_park arg=case=lazy expect=fail "STALE"
//!
//! TLB shootdown by IPI (`armv7_mm::tlb::ipi`) on four CPUs with GICv2 software-generated
//! interrupts, under the same stress as `smp_shootdown` (its readers, frame pool and
//! poisoning hand-back from `smp_support`).
//!
//! QEMU's TLBs are per CPU and a local `TLBIMVA` leaves the other CPUs' entries alone, so
//! on `-M virt` the local operations alone leave the readers' stale translations in place
//! (`smp_shootdown`'s `bug=local` variant shows that); here every gather is an
//! [`IpiTlb`]: local operations on CPU 0, the same operations replayed by an SGI handler
//! on every CPU in the space's CPU mask (set by `LockedAddressSpace::activate`), each
//! acknowledging through a [`Mailbox`] after its `dsb nsh`.
//!
//! Cases:
//! - `ipi`: CPUs 1-3 read every watched VA of one space (their IRQs unmasked, the GIC's CPU
//!   interface on); CPU 0 zaps random slots (every 16th round a whole 4 MiB group with its
//!   table) through gathers over the IPI backend, hands the frames back poisoned and
//!   reuses them. Prints `smp-ipi: <rounds> rounds, <reads> reads, <K> stale, <I> ipis,
//!   <F> flushes`; fails if K > 0.
//! - `lazy`: the same, but the readers park (bare `TTBR0` write) keeping the space's ASID
//!   first and go on reading: their TLBs still hold the space's entries, so they stay in
//!   its mask and are interrupted although they no longer run it.
//! - `broadcast`: the same stress over the inner-shareable backend, for comparison
//!   (`smp-stress: ...`).
//!
//! Teeth (each must print "STALE"): `ipibug=skip_local`, the SGI handler acknowledges
//! without its local invalidates; `ipibug=miss_cpu`, the transport leaves CPU 3 out of
//! every shootdown; `ipibug=clear_on_park` on `lazy`, the readers leave the mask when they
//! switch away.

#![no_std]
#![no_main]

#[path = "smp_support/mod.rs"]
mod support;

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use armv7_mm::gather::FlushReport;
use armv7_mm::tlb::ipi::{CpuMask, CpuSet, FlushRequest, IpiTlb, IpiTransport, Mailbox};
use armv7_mm::tlb::{Armv7Tlb, Cp15, Shareability};
use armv7_mm::{Asid, TlbBackend, TlbCounters, VirtAddr};
use rt::{ensure, ensure_eq, println, Case, CaseResult};
use support::{map_from_pool, mark, new_user_space, range, PoolMemory, Slot, Space, FLUSHED, OPEN};

rt::entry!(main);

const MIB: u32 = 1 << 20;
const GROUP: u32 = 4 * MIB;
const BASE: u32 = 0x1000_0000;
/// Watched pages per 4 MiB group.
const PER_GROUP: usize = 12;
/// Where the GIC is mapped: a kernel (`TTBR1`) VA, so every CPU reaches it whatever it
/// runs. One 1 MiB section holds the distributor and the CPU interface.
const GIC_VA: u32 = 0xF800_0000;
/// The SGI number of a shootdown.
const SGI_FLUSH: u32 = 1;
/// The SGI a target sends back to the initiator once it acknowledged.
const SGI_DONE: u32 = 2;

static MAILBOX: Mailbox = Mailbox::new();
/// CPUs taking shootdown SGIs (their IRQs unmasked); CPU 0 initiates only.
static ONLINE: AtomicU32 = AtomicU32::new(1);
static SHOOTDOWNS: AtomicU32 = AtomicU32::new(0);
static IPIS: AtomicU32 = AtomicU32::new(0);
/// `ipibug=skip_local`: handlers acknowledge without invalidating.
static SKIP_LOCAL: AtomicBool = AtomicBool::new(false);
/// `ipibug=miss_cpu`: CPU 3 is never sent a shootdown.
static MISS_CPU: AtomicBool = AtomicBool::new(false);
/// `ipibug=clear_on_park`: a CPU leaves the space's mask when it switches away.
static CLEAR_ON_PARK: AtomicBool = AtomicBool::new(false);

fn main() -> ! {
    support::setup("smp_ipi");
    support::map_kernel_device(GIC_VA, rt::gic::VIRT_GICD_PA, u64::from(MIB));
    // SAFETY: the section just mapped holds the distributor (offset 0) and the CPU
    // interface (offset 0x1_0000) as device memory, in the kernel table every CPU uses.
    unsafe {
        rt::gic::init(
            GIC_VA as usize,
            GIC_VA as usize + (rt::gic::VIRT_GICC_PA - rt::gic::VIRT_GICD_PA) as usize,
        )
    };
    rt::gic::set_handler(on_sgi);
    // CPU 0 initiates with IRQs masked; its CPU interface on lets `wfi` wake on SGI_DONE.
    rt::gic::init_cpu();
    SKIP_LOCAL.store(rt::arg("ipibug") == Some("skip_local"), Ordering::SeqCst);
    MISS_CPU.store(rt::arg("ipibug") == Some("miss_cpu"), Ordering::SeqCst);
    CLEAR_ON_PARK.store(rt::arg("ipibug") == Some("clear_on_park"), Ordering::SeqCst);
    rt::cases::run(&[
        Case {
            name: "ipi",
            run: || stress(Kind::Ipi),
        },
        Case {
            name: "lazy",
            run: || stress(Kind::Lazy),
        },
        Case {
            name: "broadcast",
            run: || stress(Kind::Broadcast),
        },
    ])
}

/// The kernel's side of the IPI backend: GICv2 SGIs and one mailbox.
struct Gic;

impl IpiTransport for Gic {
    fn this_cpu(&self) -> usize {
        rt::cpu_id()
    }

    fn online(&self) -> CpuSet {
        CpuSet(ONLINE.load(Ordering::SeqCst))
    }

    fn shootdown(&self, targets: CpuSet, request: &FlushRequest) {
        let targets = if MISS_CPU.load(Ordering::Relaxed) {
            targets.without(3)
        } else {
            targets
        };
        if targets.is_empty() {
            return;
        }
        SHOOTDOWNS.fetch_add(1, Ordering::Relaxed);
        IPIS.fetch_add(targets.len(), Ordering::Relaxed);
        let posted = MAILBOX.post(targets, request);
        rt::gic::send_sgi(targets.0, SGI_FLUSH);
        // Sleep rather than spin (a spinning vCPU takes the host core the targets need):
        // each target rings back after its acknowledgement.
        while !MAILBOX.pending().is_empty() {
            rt::gic::wait_for_interrupt();
            while rt::gic::take_pending().is_some() {}
        }
        posted.wait();
    }
}

static GIC: Gic = Gic;

/// A local backend that does nothing (`ipibug=skip_local`).
struct Nothing;

impl TlbBackend for Nothing {
    fn prepare(&mut self) {}
    fn invalidate_va(&mut self, _: VirtAddr, _: Asid) {}
    fn invalidate_va_all_asids(&mut self, _: VirtAddr) {}
    fn invalidate_asid(&mut self, _: Asid) {}
    fn invalidate_all(&mut self) {}
    fn invalidate_branch_predictor(&mut self) {}
    fn complete(&mut self) {}
    fn counters(&self) -> TlbCounters {
        TlbCounters::default()
    }
}

/// The SGI handler: replay the posted request locally (barrier included), then
/// acknowledge.
fn on_sgi(sgi: u32, from: usize) {
    if sgi != SGI_FLUSH {
        return;
    }
    let cpu = rt::cpu_id();
    let handled = if SKIP_LOCAL.load(Ordering::Relaxed) {
        MAILBOX.handle(cpu, &mut Nothing)
    } else {
        MAILBOX.handle(cpu, &mut Armv7Tlb::new(Cp15, Shareability::Local))
    };
    if handled {
        // Wake the initiator (it waits in `wfi`).
        rt::gic::send_sgi(1 << from, SGI_DONE);
    }
}

/// A reader CPU: takes SGIs, then reads (its switch marks it in the space's mask first).
fn ipi_reader(cpu: usize) {
    rt::gic::init_cpu();
    ONLINE.fetch_or(1 << cpu, Ordering::SeqCst);
    rt::gic::enable_irqs();
    support::reader(cpu);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Readers run the space.
    Ipi,
    /// Readers ran the space and parked keeping its ASID.
    Lazy,
    /// [`Kind::Ipi`] over the broadcast backend.
    Broadcast,
}

/// VA of watched slot `i` (as in `smp_shootdown`: groups of [`PER_GROUP`] pages, one
/// group per 4 MiB, page number `i` modulo 64 so that QEMU's direct-mapped TLB keeps them
/// all).
fn slot_va(i: usize) -> u32 {
    BASE + (i / PER_GROUP) as u32 * GROUP + i as u32 * 0x1000
}

fn remap(space: &Space, slots: &[usize]) {
    let mut g = space.lock();
    for &i in slots {
        mark(i, OPEN);
        map_from_pool(&mut g, slot_va(i));
    }
}

/// Zaps `slots` (and, with `group`, the whole group and its table) through a gather over
/// `backend`, holding the lock across the finish.
fn zap<B: TlbBackend>(
    space: &Space,
    backend: B,
    slots: &[usize],
    group: Option<u32>,
) -> Result<FlushReport, ()> {
    let mut guard = space.lock();
    let mut g = space.gather(backend, PoolMemory);
    for &i in slots {
        guard
            .unmap(range(slot_va(i), 4096), &mut g)
            .map_err(|e| println!("    unmap: {e:?}"))?;
    }
    if let Some(gb) = group {
        guard
            .unmap(range(gb, u64::from(GROUP)), &mut g)
            .map_err(|e| println!("    unmap group: {e:?}"))?;
        guard
            .free_tables(range(gb, GROUP.into()), range(gb, GROUP.into()), &mut g)
            .map_err(|e| println!("    free_tables: {e:?}"))?;
    }
    let r = g.finish();
    drop(guard);
    Ok(r)
}

static SPACE: Slot<Space> = Slot::new();

fn ipi_tlb(cpus: &CpuMask) -> IpiTlb<'_, Armv7Tlb<Cp15>, &'static Gic> {
    IpiTlb::new(Cp15, &GIC, cpus)
}

const READERS: [usize; 3] = [1, 2, 3];

fn stress(kind: Kind) -> CaseResult {
    const SLOTS: usize = 48;
    // An IPI round trip costs QEMU up to a host time slice (four vCPU threads on fewer
    // host cores): 2 ms a round on two idle cores, ~14 ms on busy ones (~40 ms with the
    // initiator spinning instead of sleeping in `wfi`).
    const ROUNDS: u32 = 2_000;
    const HANDSHAKE_EVERY: u32 = 100;
    ensure!(rt::smp::cpus() == 4, "needs 4 CPUs");
    let start = rt::smp::uptime_us();
    support::pool_fill(SLOTS + 32);
    SPACE.put(new_user_space());
    let space = SPACE.get();
    let vas: [u32; 64] = core::array::from_fn(slot_va);
    support::watch(&vas[..SLOTS]);
    let all: [usize; 64] = core::array::from_fn(|i| i);
    remap(space, &all[..SLOTS]);
    support::GARBAGE_TABLES.store(true, Ordering::SeqCst);
    let lazy = kind == Kind::Lazy;
    support::start_readers_with(space, &READERS, lazy, ipi_reader);
    if lazy {
        // Park keeping the ASID: the readers' TLBs keep the space's entries, usable under
        // that ASID, so they must still be interrupted.
        support::readers_switch(1);
        if CLEAR_ON_PARK.load(Ordering::SeqCst) {
            for cpu in READERS {
                space.cpus().forget(cpu);
            }
        }
    }
    let marked = space.cpus().load();
    let before = support::HANDED_BACK.load(Ordering::SeqCst);
    let (sd0, ipis0, handled0) = (
        SHOOTDOWNS.load(Ordering::SeqCst),
        IPIS.load(Ordering::SeqCst),
        MAILBOX.handled(),
    );
    let mut rng = support::Rng(0x1234_5678);
    let (mut invalidates, mut flushes, mut tables) = (0u64, 0u32, 0u32);
    let mut rounds = 0;
    // Lazily parked readers lose each entry at its first zap: fewer rounds say it all.
    let want = if lazy { ROUNDS / 5 } else { ROUNDS };
    for round in 0..want {
        if round % HANDSHAKE_EVERY == 0 {
            support::arm_handshake();
        }
        let pick = support::stress_round::<PER_GROUP>(round, &mut rng, SLOTS, BASE, GROUP);
        let (slots, group) = (&pick.slots[..pick.n], pick.group);
        let zapped = if group.is_some() { &[][..] } else { slots };
        let r = match kind {
            Kind::Ipi | Kind::Lazy => zap(space, ipi_tlb(space.cpus()), zapped, group)?,
            Kind::Broadcast => zap(space, support::tlb(), zapped, group)?,
        };
        for &i in slots {
            mark(i, FLUSHED);
        }
        invalidates += r.invalidates.tlb_ops();
        flushes += r.flushes;
        tables += r.table_frames_freed;
        remap(space, slots);
        rounds += 1;
        if support::reader_totals().1 > 0 {
            break;
        }
    }
    let handed = support::HANDED_BACK.load(Ordering::SeqCst) - before;
    let (reads, stale) = support::stop_readers(&READERS);
    support::GARBAGE_TABLES.store(false, Ordering::SeqCst);
    let shootdowns = SHOOTDOWNS.load(Ordering::SeqCst) - sd0;
    let ipis = IPIS.load(Ordering::SeqCst) - ipis0;
    let handled = MAILBOX.handled() - handled0;
    match kind {
        Kind::Ipi => println!(
            "smp-ipi: {rounds} rounds, {reads} reads, {stale} stale, {ipis} ipis, {flushes} flushes"
        ),
        Kind::Lazy => println!(
            "smp-ipi (lazily parked readers): {rounds} rounds, {reads} reads, {stale} stale, \
             {ipis} ipis, {flushes} flushes"
        ),
        Kind::Broadcast => println!(
            "smp-stress: {rounds} rounds, {reads} reads, {stale} stale, {flushes} flushes (broadcast)"
        ),
    }
    for cpu in READERS {
        let (r, s) = support::reader_counts(cpu);
        println!("    cpu {cpu}: {r} reads, {s} stale");
    }
    println!(
        "    {handed} frames handed back; {invalidates} TLB invalidates, {tables} table frames \
         freed; {shootdowns} shootdowns, {handled} handled; mask {:#x}; {} ms",
        marked.0,
        (rt::smp::uptime_us() - start) / 1000
    );
    support::report_first_stale();
    // SAFETY: every reader has returned and parked; CPU 0 runs the park space.
    let s = unsafe { SPACE.take() };
    let report = match kind {
        Kind::Ipi | Kind::Lazy => {
            // The teardown flush goes to every CPU that ran the space.
            let cpus = CpuMask::new();
            for c in s.cpus().load().iter() {
                let _ = cpus.enter(c);
            }
            s.destroy(ipi_tlb(&cpus), PoolMemory)
        }
        Kind::Broadcast => s.destroy(support::tlb(), PoolMemory),
    };
    let _ = support::ALLOC.release(report.asid);
    support::pool_drain();
    ensure_eq!(stale, 0, "stale reads");
    ensure!(rounds >= want, "only {} rounds", rounds);
    ensure!(
        handed >= rounds,
        "{} frames handed back in {} rounds",
        handed,
        rounds
    );
    ensure!(
        reads >= 3 * u64::from(rounds),
        "readers barely ran: {} reads",
        reads
    );
    if kind != Kind::Broadcast {
        ensure_eq!(marked.0, 0b1110, "readers marked in the space's mask");
        ensure!(
            shootdowns >= rounds,
            "{} shootdowns in {} rounds",
            shootdowns,
            rounds
        );
        ensure_eq!(ipis, 3 * shootdowns, "every shootdown to the three readers");
        ensure_eq!(handled, ipis, "every IPI handled");
    }
    Ok(())
}

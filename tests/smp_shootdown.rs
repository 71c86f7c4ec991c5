//! qemu: machine=virt,vexpress-a9,raspi2b cpu=cortex-a15,cortex-a7 smp=4 mem=128
//! timeout: 120
//! variant: local arg=bug=local arg=case=stress expect=fail "STALE"
//! variant: free_early arg=bug=free_early arg=case=stress expect=fail "STALE"
//! variant: no_nested machine=virt arg=bug=no_nested arg=case=overlapping expect=fail "STALE"
//! variant: no_nested_disjoint arg=bug=no_nested arg=case=disjoint expect=fail "must fall back"
//! variant: local_teardown arg=bug=local arg=case=teardown expect=fail "STALE"
//! variant: no_table_sync arg=bug=no_table_sync arg=case=lockless expect=fail "STALE"
//!
//! TLB shootdown on four CPUs, through `LockedAddressSpace`, its gathers and the ASID
//! allocator (see `smp_support` for the readers and the poisoning hand-back).
//!
//! Cases:
//! - `stress`: CPUs 1-3 read every watched VA of one address space continuously, running
//!   on its `TTBR0`/ASID; CPU 0 zaps random slots (and every 16th round a whole 4 MiB
//!   group with its table) through a gather, and each frame handed back is poisoned,
//!   shown to every reader, and reused for another VA. Prints
//!   `smp-stress: <rounds> rounds, <reads> reads, <K> stale`; fails if K > 0.
//! - `two_zappers_disjoint`: CPUs 0 and 1 zap their own halves of one space at once
//!   (lock dropped between unmap and finish, both gathers open when either finishes):
//!   the shared in-flight count makes at least one of them flush the whole ASID
//!   (`Fallback::Nested`) every round; readers on CPUs 2-3 see nothing stale.
//! - `two_zappers_overlapping`: CPU 1 clears a range first, CPU 0 then zaps a range
//!   containing it and finishes first: its finish must leave *nothing* of its range
//!   reachable (checked by the readers right after), although CPU 1's gather, which
//!   owns the entries CPU 0 found already clear, has not flushed yet.
//! - `teardown`: readers ran the space, then park keeping its ASID (a lazy switch: its
//!   entries stay in their TLBs under that ASID); CPU 0 destroys the space (teardown
//!   gather), releases the ASID, and a new space gets the same ASID; the readers switch
//!   to it (same ASID: only `TTBR0` changes, nothing is flushed). Nothing of the old space
//!   may be reachable at any point after the teardown.
//! - `lockless`: CPUs 1-3 translate without the lock (`translate_lockless`, dawdling
//!   between the L1 and L2 reads) while CPU 0 zaps groups and frees their tables; a freed
//!   table frame is filled with descriptors to a secret frame. A walk must never return
//!   anything but the right frame or nothing.
//!
//! Teeth (each must be caught, "STALE"): `bug=local` (local TLB operations) on `stress`
//! and `teardown`; `bug=free_early` (frames handed back as the walker clears them, flush
//! afterwards) on `stress`; `bug=no_nested` (the gathers not counted together) on
//! `two_zappers_overlapping` (and on `two_zappers_disjoint`, where nothing is stale but the
//! missing whole-ASID fallback is caught: "must fall back"); `bug=no_table_sync` (tables freed without waiting for the
//! lockless walkers) on `lockless`.
//!
//! On `-M vexpress-a9` (Cortex-A9 r0p0: the gathers' backend applies 720789, TLBIALLIS and
//! TLBIMVAAIS) every case and every variant but `no_nested` runs too. Off `virt` QEMU's
//! TLB uses 1 KiB pages, so each 4 KiB entry is a "large page" and any by-VA invalidate
//! flushes the whole TLB: the entries CPU 0's unnested gather misses are dropped anyway,
//! and `no_nested` on `two_zappers_overlapping` cannot fail there. The A9 has no generic
//! timer, so the times printed there are not wall-clock (see `rt::smp::uptime_us`). The
//! stress runs 4000 rounds there (10000 on `virt`).
//! On `-M raspi2b` (4x Cortex-A7, RAM at 0) the same cases and variants run without a
//! split (see `smp_support`): every space is a `Whole` table with the kernel's global
//! entries, so freed tables are invalidated for all ASIDs and a teardown is one TLBIALL;
//! 4000 stress rounds, and `no_nested` is left out for the same 1 KiB-page reason.

#![no_std]
#![no_main]

#[path = "smp_support/mod.rs"]
mod support;

use core::sync::atomic::{AtomicU32, Ordering};

use armv7_mm::gather::{Fallback, FlushReport, GatherConfig, InFlight, MmuGather, Scope, Tee};
use armv7_mm::locked::SpaceGather;
use armv7_mm::lockless::WalkEpochs;
use armv7_mm::tlb::Cp15Tlb;
use armv7_mm::{PhysAddr, UnmapSink, VirtAddr};
use rt::frames::KernelMemory;
use rt::smp::Barrier;
use rt::{ensure, ensure_eq, println, Case, CaseResult};
use support::{
    bug, map_from_pool, mark, new_user_space, range, tlb, Bug, FreeAtOnce, KeepMapped, PoolMemory,
    Slot, Space, FLUSHED, OPEN,
};

rt::entry!(main);

const MIB: u32 = 1 << 20;
const GROUP: u32 = 4 * MIB;
const BASE: u32 = rt::board::FREE_VA;
/// Watched pages per 4 MiB group.
const PER_GROUP: usize = 12;

fn main() -> ! {
    support::setup("smp_shootdown");
    rt::cases::run(&[
        Case {
            name: "stress",
            run: || timed(stress),
        },
        Case {
            name: "two_zappers_disjoint",
            run: || timed(two_zappers_disjoint),
        },
        Case {
            name: "two_zappers_overlapping",
            run: || timed(two_zappers_overlapping),
        },
        Case {
            name: "teardown",
            run: || timed(teardown),
        },
        Case {
            name: "lockless",
            run: || timed(lockless),
        },
    ])
}

/// Runs a case and prints how long it took.
fn timed(case: fn() -> CaseResult) -> CaseResult {
    let start = rt::smp::uptime_us();
    let r = case();
    println!("    time: {} ms", (rt::smp::uptime_us() - start) / 1000);
    r
}

/// VA of watched slot `i`: groups of [`PER_GROUP`] consecutive pages, one group per
/// 4 MiB (one L2 table frame each), and the page number of slot `i` is `i` modulo 64.
/// That matters on QEMU, whose per-vCPU TLB is direct-mapped by page number (64 to 256
/// sets, plus an 8-entry victim cache): slots that shared a set would evict each other
/// from the readers' TLBs, and a stale translation that has been evicted cannot show.
fn slot_va(i: usize) -> u32 {
    BASE + (i / PER_GROUP) as u32 * GROUP + i as u32 * 0x1000
}

/// Maps slots `slots` of `space` from the pool (marking them open first).
fn remap(space: &Space, slots: &[usize]) {
    let mut g = space.lock();
    for &i in slots {
        mark(i, OPEN);
        map_from_pool(&mut g, slot_va(i));
    }
}

/// Zaps `slots` (and, with `group`, the whole group and its table) through a gather of
/// `space`, holding the lock across the finish. With [`Bug::FreeEarly`] the frames are
/// handed back as the walker clears them and the gather only flushes afterwards.
fn zap(space: &Space, slots: &[usize], group: Option<u32>) -> Result<FlushReport, ()> {
    let mut guard = space.lock();
    if bug() == Bug::FreeEarly {
        let scope = Scope::Asid(space.asid_context().asid().ok_or(())?);
        let mut t = tlb();
        // The frames were handed back already by `FreeAtOnce`: the gather keeps them.
        let mut g = MmuGather::new(scope, &mut t, KeepMapped, space.in_flight());
        let mut eager = FreeAtOnce;
        {
            let raw = guard.raw_for_test();
            let mut sink = Tee::new(&mut eager, &mut g);
            let sink: &mut dyn UnmapSink = &mut sink;
            zap_into(raw, slots, group, sink)?;
        }
        return Ok(g.finish());
    }
    let mut g = space.gather(tlb(), PoolMemory);
    for &i in slots {
        guard
            .unmap(range(slot_va(i), 4096), &mut g)
            .map_err(|e| println!("    unmap: {e:?}"))?;
    }
    if let Some(gb) = group {
        guard
            .unmap(range(gb, GROUP as u64), &mut g)
            .map_err(|e| println!("    unmap group: {e:?}"))?;
        guard
            .free_tables(range(gb, GROUP as u64), range(gb, GROUP as u64), &mut g)
            .map_err(|e| println!("    free_tables: {e:?}"))?;
    }
    let r = g.finish();
    drop(guard);
    Ok(r)
}

fn zap_into(
    raw: &mut armv7_mm::short::AddressSpace<KernelMemory>,
    slots: &[usize],
    group: Option<u32>,
    sink: &mut dyn UnmapSink,
) -> Result<(), ()> {
    for &i in slots {
        raw.unmap(range(slot_va(i), 4096), sink).map_err(|_| ())?;
    }
    if let Some(gb) = group {
        raw.unmap(range(gb, GROUP as u64), sink).map_err(|_| ())?;
        raw.free_tables(range(gb, GROUP as u64), range(gb, GROUP as u64), sink)
            .map_err(|_| ())?;
    }
    Ok(())
}

static SPACE: Slot<Space> = Slot::new();
static SPACE_B: Slot<Space> = Slot::new();

/// Creates the case's space with `nslots` watched slots mapped from a pool of
/// `nslots + extra` frames.
fn make_space(nslots: usize, extra: usize) -> &'static Space {
    support::pool_fill(nslots + extra);
    SPACE.put(new_user_space());
    let s = SPACE.get();
    let vas: [u32; 64] = core::array::from_fn(slot_va);
    support::watch(&vas[..nslots]);
    let all: [usize; 64] = core::array::from_fn(|i| i);
    remap(s, &all[..nslots]);
    s
}

/// Destroys the case's space (every CPU parked), returns the pool.
fn drop_space() -> FlushReport {
    // SAFETY: every secondary has returned and parked; CPU 0 runs the park space.
    let s = unsafe { SPACE.take() };
    let d = s.destroy(tlb(), PoolMemory);
    let _ = support::ALLOC.release(d.asid);
    support::pool_drain();
    d.report
}

const READERS: [usize; 3] = [1, 2, 3];

fn stress() -> CaseResult {
    const SLOTS: usize = 48;
    // Fewer off `virt`, to keep the suite's time (the variants' teeth show in the first
    // rounds anyway: see HANDSHAKE_EVERY).
    let wanted: u32 = if rt::board::MACHINE == "virt" {
        10_000
    } else {
        4_000
    };
    // The first round waits for the readers too, so each bug variant shows at once.
    const HANDSHAKE_EVERY: u32 = 200;
    ensure!(rt::smp::cpus() == 4, "needs 4 CPUs");
    let space = make_space(SLOTS, 32);
    support::GARBAGE_TABLES.store(true, Ordering::SeqCst);
    support::start_readers(space, &READERS, false);
    let before = support::HANDED_BACK.load(Ordering::SeqCst);
    let mut rng = support::Rng(0x1234_5678);
    let (mut invalidates, mut fallbacks, mut tables, mut syncs) = (0u64, 0u32, 0u32, 0u32);
    let mut rounds = 0;
    for round in 0..wanted {
        if round % HANDSHAKE_EVERY == 0 {
            support::arm_handshake();
        }
        let pick = support::stress_round::<PER_GROUP>(round, &mut rng, SLOTS, BASE, GROUP);
        let (slots, group) = (&pick.slots[..pick.n], pick.group);
        let r = zap(space, if group.is_some() { &[] } else { slots }, group)?;
        for &i in slots {
            mark(i, FLUSHED);
        }
        invalidates += r.invalidates.tlb_ops();
        fallbacks += u32::from(r.fell_back());
        tables += r.table_frames_freed;
        syncs += r.table_syncs;
        remap(space, slots);
        rounds += 1;
        if support::reader_totals().1 > 0 {
            // Caught already: no need to spend the rest of the boot.
            break;
        }
    }
    let handed = support::HANDED_BACK.load(Ordering::SeqCst) - before;
    let (reads, stale) = support::stop_readers(&READERS);
    support::GARBAGE_TABLES.store(false, Ordering::SeqCst);
    println!("smp-stress: {rounds} rounds, {reads} reads, {stale} stale");
    for cpu in READERS {
        let (r, s) = support::reader_counts(cpu);
        println!("    cpu {cpu}: {r} reads, {s} stale");
    }
    println!(
        "    {handed} frames handed back (poisoned, shown to every reader, reused); \
         {invalidates} TLB invalidates, {fallbacks} whole-ASID fallbacks, {tables} table \
         frames freed, {syncs} table syncs"
    );
    support::report_first_stale();
    drop_space();
    ensure_eq!(stale, 0, "stale reads");
    ensure!(rounds >= wanted, "only {} rounds", rounds);
    ensure!(
        handed >= rounds,
        "{} frames handed back in {} rounds",
        handed,
        rounds
    );
    ensure!(
        reads >= 3 * rounds as u64,
        "readers barely ran: {} reads",
        reads
    );
    Ok(())
}

// ---- Two zappers ----------------------------------------------------------------------

static ZAP_BARRIER: Barrier = Barrier::new(2);
static NESTED: [AtomicU32; 2] = [const { AtomicU32::new(0) }; 2];
static ZAP_ROUNDS: AtomicU32 = AtomicU32::new(0);
static ZAP_FAILED: AtomicU32 = AtomicU32::new(0);
/// A private in-flight count per zapper ([`Bug::NoNested`]).
static PRIVATE: [InFlight; 2] = [const { InFlight::new() }; 2];
const HALF: usize = 24;

/// A zapper's open gather.
enum ZapGather {
    /// Made by the space (`LockedAddressSpace::gather`): the way a kernel does it.
    Space(SpaceGather<'static, Cp15Tlb, PoolMemory>),
    /// [`Bug::NoNested`]: counted in a private in-flight count, not the space's.
    Private(MmuGather<'static, Cp15Tlb, PoolMemory>),
}

impl ZapGather {
    fn finish(self) -> FlushReport {
        match self {
            ZapGather::Space(g) => g.finish(),
            ZapGather::Private(g) => g.finish(),
        }
    }
}

/// Unmaps `slots` under the lock into a new gather of zapper `z` and returns the gather
/// still open (the lock is dropped). With [`Bug::NoNested`] the gather is counted apart
/// from the other zapper's (what the shared count prevents).
fn zapper_unmap(space: &'static Space, z: usize, slots: &[usize]) -> Result<ZapGather, ()> {
    let mut guard = space.lock();
    if bug() == Bug::NoNested {
        let scope = Scope::Asid(space.asid_context().asid().ok_or(())?);
        let mut g = MmuGather::new(scope, tlb(), PoolMemory, &PRIVATE[z])
            .with_asid_source(space.asid_context());
        for &i in slots {
            guard
                .raw_for_test()
                .unmap(range(slot_va(i), 4096), &mut g)
                .map_err(|_| ())?;
        }
        return Ok(ZapGather::Private(g));
    }
    let mut g = space.gather(tlb(), PoolMemory);
    for &i in slots {
        guard
            .unmap(range(slot_va(i), 4096), &mut g)
            .map_err(|e| println!("    unmap: {e:?}"))?;
    }
    Ok(ZapGather::Space(g))
}

fn disjoint_zapper(z: usize) {
    let space = SPACE.get();
    let mut rng = support::Rng(0x9e37_79b9 ^ z as u32);
    let rounds = ZAP_ROUNDS.load(Ordering::SeqCst);
    for round in 0..rounds {
        // 1..6 of this zapper's own slots.
        let n = 1 + rng.next() as usize % 6;
        let first = rng.next() as usize % HALF;
        let mut slots = [0usize; 6];
        for (k, s) in slots.iter_mut().enumerate().take(n) {
            *s = z * HALF + (first + k * 5) % HALF;
        }
        let slots = &slots[..n];
        let Ok(g) = zapper_unmap(space, z, slots) else {
            ZAP_FAILED.fetch_add(1, Ordering::SeqCst);
            // Keep the other zapper's barriers matched.
            ZAP_BARRIER.wait();
            ZAP_BARRIER.wait();
            continue;
        };
        ZAP_BARRIER.wait(); // both gathers open, neither lock held
        let r = g.finish();
        if r.fallback == Some(Fallback::Nested) {
            NESTED[z].fetch_add(1, Ordering::SeqCst);
        }
        for &i in slots {
            mark(i, FLUSHED);
        }
        ZAP_BARRIER.wait(); // both finished
        if round % 10 == 0 {
            // Let the readers check the promise (slots marked flushed must fault).
            support::readers_pass(2);
        }
        remap(space, slots);
    }
}

fn two_zappers_disjoint() -> CaseResult {
    const ROUNDS: u32 = 100;
    let space = make_space(2 * HALF, 16);
    support::start_readers(space, &[2, 3], false);
    ZAP_ROUNDS.store(ROUNDS, Ordering::SeqCst);
    ZAP_FAILED.store(0, Ordering::SeqCst);
    for n in &NESTED {
        n.store(0, Ordering::SeqCst);
    }
    rt::smp::start(1, disjoint_zapper);
    disjoint_zapper(0);
    rt::smp::wait(1);
    let (reads, stale) = support::stop_readers(&[2, 3]);
    let nested = [
        NESTED[0].load(Ordering::SeqCst),
        NESTED[1].load(Ordering::SeqCst),
    ];
    println!(
        "    {ROUNDS} rounds on 2 CPUs: nested fallbacks {} (cpu 0) + {} (cpu 1); readers {reads} reads, {stale} stale",
        nested[0], nested[1]
    );
    support::report_first_stale();
    drop_space();
    ensure_eq!(ZAP_FAILED.load(Ordering::SeqCst), 0, "unmaps refused");
    ensure_eq!(stale, 0, "stale reads");
    ensure!(
        nested[0] + nested[1] >= ROUNDS,
        "the first gather to finish each round must fall back (Nested): {} of {}",
        nested[0] + nested[1],
        ROUNDS
    );
    Ok(())
}

static STEP: AtomicU32 = AtomicU32::new(0);
/// Set when CPU 0 leaves the overlapping case early: CPU 1 stops at its next step.
static ABORT: AtomicU32 = AtomicU32::new(0);

/// The slots CPU 1 clears first (group 1), inside CPU 0's range (groups 0 and 1).
const INNER: core::ops::Range<usize> = PER_GROUP..2 * PER_GROUP;
const OUTER: core::ops::Range<usize> = 0..2 * PER_GROUP;

/// Waits for step `s`; false if the case was aborted meanwhile.
fn wait_step(s: u32) -> bool {
    while STEP.load(Ordering::SeqCst) < s {
        if ABORT.load(Ordering::SeqCst) != 0 {
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

fn inner_zapper(_cpu: usize) {
    let space = SPACE.get();
    let rounds = ZAP_ROUNDS.load(Ordering::SeqCst);
    let inner: [usize; PER_GROUP] = core::array::from_fn(|k| INNER.start + k);
    for r in 0..rounds {
        let base = r * 4;
        if !wait_step(base + 1) {
            return;
        }
        let Ok(g) = zapper_unmap(space, 1, &inner) else {
            ZAP_FAILED.fetch_add(1, Ordering::SeqCst);
            return;
        };
        STEP.store(base + 2, Ordering::SeqCst);
        // CPU 0 has finished its gather and checked (or given up): finish ours.
        wait_step(base + 3);
        let rep = g.finish();
        if rep.fallback == Some(Fallback::Nested) {
            NESTED[1].fetch_add(1, Ordering::SeqCst);
        }
        STEP.store(base + 4, Ordering::SeqCst);
    }
}

fn two_zappers_overlapping() -> CaseResult {
    const ROUNDS: u32 = 30;
    let space = make_space(2 * PER_GROUP, 16);
    support::start_readers(space, &[2, 3], false);
    ZAP_ROUNDS.store(ROUNDS, Ordering::SeqCst);
    ZAP_FAILED.store(0, Ordering::SeqCst);
    STEP.store(0, Ordering::SeqCst);
    ABORT.store(0, Ordering::SeqCst);
    for n in &NESTED {
        n.store(0, Ordering::SeqCst);
    }
    rt::smp::start(1, inner_zapper);
    let outer: [usize; 2 * PER_GROUP] = core::array::from_fn(|k| OUTER.start + k);
    let mut result = Ok(());
    for r in 0..ROUNDS {
        let base = r * 4;
        STEP.store(base + 1, Ordering::SeqCst);
        // CPU 1 has cleared the inner range, its gather is open.
        if !wait_step(base + 2) {
            result = Err(());
            break;
        }
        let Ok(g) = zapper_unmap(space, 0, &outer) else {
            result = Err(());
            break;
        };
        let rep = g.finish();
        if rep.fallback == Some(Fallback::Nested) {
            NESTED[0].fetch_add(1, Ordering::SeqCst);
        }
        // Promise: nothing of the outer range is reachable now. Let every reader look.
        for i in OUTER {
            mark(i, FLUSHED);
        }
        support::readers_pass(2);
        STEP.store(base + 3, Ordering::SeqCst);
        // CPU 1 has finished (its frames handed back).
        if !wait_step(base + 4) {
            result = Err(());
            break;
        }
        remap(space, &outer);
        if support::reader_totals().1 > 0 {
            break;
        }
    }
    // CPU 1 stops at its next wait (finishing a gather it has open first).
    ABORT.store(1, Ordering::SeqCst);
    rt::smp::wait(1);
    if ZAP_FAILED.load(Ordering::SeqCst) != 0 {
        result = Err(());
    }
    let (reads, stale) = support::stop_readers(&[2, 3]);
    let nested = [
        NESTED[0].load(Ordering::SeqCst),
        NESTED[1].load(Ordering::SeqCst),
    ];
    println!(
        "    overlapping: nested fallbacks cpu 0 (finishes first) {}, cpu 1 {}; readers {reads} reads, {stale} stale",
        nested[0], nested[1]
    );
    support::report_first_stale();
    drop_space();
    result?;
    ensure_eq!(stale, 0, "stale reads");
    if bug() == Bug::None {
        ensure!(
            nested[0] >= ROUNDS,
            "CPU 0 finished while CPU 1's gather was open: must fall back every round ({})",
            nested[0]
        );
    }
    Ok(())
}

// ---- Teardown with the ASID still cached ------------------------------------------

fn teardown() -> CaseResult {
    const HALF_SLOTS: usize = 24;
    support::pool_fill(2 * HALF_SLOTS + 8);
    SPACE.put(new_user_space());
    let a = SPACE.get();
    let vas: [u32; 2 * HALF_SLOTS] = core::array::from_fn(slot_va);
    support::watch(&vas);
    let first: [usize; HALF_SLOTS] = core::array::from_fn(|i| i);
    let second: [usize; HALF_SLOTS] = core::array::from_fn(|i| HALF_SLOTS + i);
    remap(a, &first);
    support::GARBAGE_TABLES.store(true, Ordering::SeqCst);
    support::start_readers(a, &READERS, true);
    let asid_a = a.asid_context().asid().ok_or(())?;
    // Park keeping ASID A: the readers' TLBs keep A's entries, usable under that ASID.
    support::readers_switch(1);
    support::readers_pass(2);
    let (_, early) = support::reader_totals();
    // SAFETY: the readers run the park table now (ASID kept); nobody else refers to A.
    let a = unsafe { SPACE.take() };
    // The first frame handed back waits, poisoned, until every reader has looked.
    support::arm_handshake();
    let d = a.destroy(tlb(), PoolMemory);
    let teardown = d.report;
    for i in first {
        mark(i, FLUSHED);
    }
    println!("    teardown of ASID {}: {}", asid_a.0, d.report);
    let released = support::ALLOC.release(d.asid);
    // The next space gets the same ASID and maps other VAs.
    SPACE_B.put(new_user_space());
    let b = SPACE_B.get();
    remap(b, &second);
    support::SWITCH_TO.put(b);
    support::readers_switch(2);
    let asid_b = b.asid_context().asid().ok_or(())?;
    support::readers_pass(4);
    let (reads, stale) = support::stop_readers(&READERS);
    support::GARBAGE_TABLES.store(false, Ordering::SeqCst);
    // SAFETY: the readers have returned.
    let _ = unsafe { support::SWITCH_TO.take() };
    println!(
        "    released {:?}; new space got ASID {}; readers {reads} reads, {stale} stale",
        released, asid_b.0
    );
    support::report_first_stale();
    // SAFETY: every reader returned and parked.
    let b = unsafe { SPACE_B.take() };
    let d = b.destroy(tlb(), PoolMemory);
    let _ = support::ALLOC.release(d.asid);
    support::pool_drain();
    ensure_eq!(early, 0, "stale before the teardown");
    ensure_eq!(
        teardown.fallback,
        Some(Fallback::Teardown),
        "a teardown flush"
    );
    ensure_eq!(teardown.invalidates.va, 0, "no per-VA work in a teardown");
    ensure!(
        teardown.leaves_released >= 24,
        "the space's pages came back"
    );
    ensure_eq!(released, Some(asid_a), "the torn-down ASID was given back");
    ensure_eq!(asid_b, asid_a, "the new space reuses the ASID");
    ensure_eq!(stale, 0, "stale reads after the teardown");
    Ok(())
}

// ---- Lockless walkers -------------------------------------------------------------

static EPOCHS: WalkEpochs<4> = WalkEpochs::new();
static WALKS: [AtomicU32; 4] = [const { AtomicU32::new(0) }; 4];
static HITS: [AtomicU32; 4] = [const { AtomicU32::new(0) }; 4];
static BAD: AtomicU32 = AtomicU32::new(0);
static BAD_PA: AtomicU32 = AtomicU32::new(0);
static WALK_STOP: AtomicU32 = AtomicU32::new(0);
const WALK_SLOTS: usize = 2 * PER_GROUP;
static DATA: [AtomicU32; WALK_SLOTS] = [const { AtomicU32::new(0) }; WALK_SLOTS];

/// The group (+1) CPU 0 is about to free the table of; 0 when none.
static HOLD_GROUP: AtomicU32 = AtomicU32::new(0);
/// The walker (cpu + 1) holding a walk of that group between its two levels; 0: none.
static HOLDER: AtomicU32 = AtomicU32::new(0);
/// Rounds CPU 0 has finished (tables freed).
static FREED_ROUND: AtomicU32 = AtomicU32::new(0);
/// Rounds in which a walker was holding the old table while it was freed.
static HELD_ROUNDS: AtomicU32 = AtomicU32::new(0);
/// Longest a holding walker waits for the free, in µs (past it, it goes on: with the sync
/// in place the free waits for it, so it must not wait for the free forever).
const HOLD_US: u64 = 3_000;

/// Between the two levels of a walk of slot `i` on `cpu`: usually a short pause; but if
/// CPU 0 is about to free this slot's table and nobody holds one yet, stay here (inside
/// the walk section, holding the table) until CPU 0 has freed it or the budget is out.
fn between_levels(cpu: usize, i: usize) {
    let group = (i / PER_GROUP) as u32 + 1;
    if HOLD_GROUP.load(Ordering::SeqCst) == group
        && HOLDER
            .compare_exchange(0, cpu as u32 + 1, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    {
        let round = FREED_ROUND.load(Ordering::SeqCst);
        let until = rt::smp::uptime_us() + HOLD_US;
        while FREED_ROUND.load(Ordering::SeqCst) == round && rt::smp::uptime_us() < until {
            core::hint::spin_loop();
        }
        return;
    }
    for _ in 0..100 {
        core::hint::spin_loop();
    }
}

fn walker(cpu: usize) {
    let space = SPACE.get();
    while WALK_STOP.load(Ordering::SeqCst) == 0 {
        for i in 0..WALK_SLOTS {
            let Ok(guard) = EPOCHS.enter(cpu) else {
                BAD.fetch_add(1, Ordering::SeqCst);
                return;
            };
            let r = space.translate_lockless_with(
                VirtAddr::new(slot_va(i)),
                &guard,
                &KernelMemory,
                &mut || between_levels(cpu, i),
            );
            drop(guard);
            WALKS[cpu].fetch_add(1, Ordering::Relaxed);
            match r {
                Ok(None) => {}
                Ok(Some(leaf)) if leaf.pa.as_u64() as u32 == DATA[i].load(Ordering::Relaxed) => {
                    HITS[cpu].fetch_add(1, Ordering::Relaxed);
                }
                Ok(Some(leaf)) => {
                    BAD_PA.store(leaf.pa.as_u64() as u32, Ordering::SeqCst);
                    BAD.fetch_add(1, Ordering::SeqCst);
                }
                Err(_) => {
                    BAD.fetch_add(1, Ordering::SeqCst);
                    return;
                }
            }
        }
    }
}

fn map_data(space: &Space, slots: core::ops::Range<usize>) {
    let mut g = space.lock();
    for i in slots {
        g.map(
            range(slot_va(i), 4096),
            PhysAddr::new(DATA[i].load(Ordering::SeqCst) as u64),
            armv7_mm::short::Attributes::USER_DATA,
            armv7_mm::MapSize::Page4K,
        )
        .unwrap_or_else(|e| panic!("map: {e:?}"));
    }
}

/// The lockless case is about tables, not range flushes: one whole-TLB flush per round
/// keeps QEMU's broadcast work (an exclusive section per operation) small.
const ONE_FLUSH: GatherConfig = GatherConfig {
    max_invalidates: 0,
    ..GatherConfig::DEFAULT
};

fn lockless() -> CaseResult {
    const ROUNDS: u32 = 100;
    for d in &DATA {
        d.store(
            rt::frames::alloc(1, 4096).ok_or(())?.as_u64() as u32,
            Ordering::SeqCst,
        );
    }
    SPACE.put(new_user_space().with_lockless_walkers(&EPOCHS));
    let space = SPACE.get();
    map_data(space, 0..WALK_SLOTS);
    BAD.store(0, Ordering::SeqCst);
    WALK_STOP.store(0, Ordering::SeqCst);
    HELD_ROUNDS.store(0, Ordering::SeqCst);
    support::GARBAGE_TABLES.store(true, Ordering::SeqCst);
    let garbage_before = support::GARBAGE_FILLED.load(Ordering::SeqCst);
    for cpu in READERS {
        rt::smp::start(cpu, walker);
    }
    let (mut tables, mut syncs) = (0u32, 0u32);
    let mut rounds = 0;
    for round in 0..ROUNDS {
        let g = (round % 2) as usize;
        let gb = BASE + g as u32 * GROUP;
        let slots = g * PER_GROUP..(g + 1) * PER_GROUP;
        // Let a walker get hold of this group's table (between its two levels) before it
        // is unlinked, so that the free below always has a walker inside the old table.
        HOLDER.store(0, Ordering::SeqCst);
        HOLD_GROUP.store(g as u32 + 1, Ordering::SeqCst);
        for _ in 0..2_000_000 {
            if HOLDER.load(Ordering::SeqCst) != 0 {
                break;
            }
            core::hint::spin_loop();
        }
        let held = HOLDER.load(Ordering::SeqCst) != 0;
        let rep = {
            let mut guard = space.lock();
            if bug() == Bug::NoTableSync {
                // What the sync prevents: a gather that frees tables as soon as the
                // hardware can no longer reach them.
                let scope = Scope::Asid(space.asid_context().asid().unwrap_or_default());
                let mut gather =
                    MmuGather::with_config(scope, tlb(), KeepMapped, space.in_flight(), ONE_FLUSH);
                let raw = guard.raw_for_test();
                raw.unmap(range(gb, GROUP as u64), &mut gather)
                    .map_err(|_| ())?;
                raw.free_tables(
                    range(gb, GROUP as u64),
                    range(gb, GROUP as u64),
                    &mut gather,
                )
                .map_err(|_| ())?;
                gather.finish()
            } else {
                let mut gather = space.gather_with_config(tlb(), KeepMapped, ONE_FLUSH);
                guard
                    .unmap(range(gb, GROUP as u64), &mut gather)
                    .map_err(|e| println!("    unmap: {e:?}"))?;
                guard
                    .free_tables(
                        range(gb, GROUP as u64),
                        range(gb, GROUP as u64),
                        &mut gather,
                    )
                    .map_err(|e| println!("    free_tables: {e:?}"))?;
                gather.finish()
            }
        };
        HOLD_GROUP.store(0, Ordering::SeqCst);
        FREED_ROUND.fetch_add(1, Ordering::SeqCst);
        HELD_ROUNDS.fetch_add(u32::from(held), Ordering::SeqCst);
        tables += rep.table_frames_freed;
        syncs += rep.table_syncs;
        map_data(space, slots);
        rounds += 1;
        if BAD.load(Ordering::SeqCst) > 0 {
            break;
        }
    }
    WALK_STOP.store(1, Ordering::SeqCst);
    for cpu in READERS {
        rt::smp::wait(cpu);
    }
    support::GARBAGE_TABLES.store(false, Ordering::SeqCst);
    let garbage = support::GARBAGE_FILLED.load(Ordering::SeqCst) - garbage_before;
    let walks: u32 = WALKS.iter().map(|w| w.load(Ordering::SeqCst)).sum();
    let hits: u32 = HITS.iter().map(|w| w.load(Ordering::SeqCst)).sum();
    let bad = BAD.load(Ordering::SeqCst);
    println!(
        "    {rounds} rounds: {tables} table frames freed (garbage-filled {garbage}), {syncs} syncs, \
         {} with a walker inside the table being freed; walkers {walks} lockless walks ({hits} \
         found the page), {bad} bad",
        HELD_ROUNDS.load(Ordering::SeqCst)
    );
    if bad > 0 {
        let pa = BAD_PA.load(Ordering::SeqCst);
        let what = if pa & !0xfff == support::secret_pa() {
            "the secret frame: it read a freed, reused table"
        } else {
            "a wrong frame"
        };
        println!("    STALE: a lockless walk returned {pa:#x}, {what}");
    }
    // SAFETY: the walkers have returned.
    let s = unsafe { SPACE.take() };
    let d = s.destroy(tlb(), KeepMapped);
    let _ = support::ALLOC.release(d.asid);
    for d in &DATA {
        rt::frames::free(PhysAddr::new(d.load(Ordering::SeqCst) as u64), 1);
    }
    ensure_eq!(bad, 0, "lockless walks that read a freed table");
    ensure!(tables >= rounds, "tables freed: {}", tables);
    ensure!(
        hits > 0 && walks > 10 * rounds,
        "walkers barely ran: {} walks",
        walks
    );
    if bug() == Bug::None {
        ensure_eq!(syncs, tables, "one sync per flush that freed a table frame");
        ensure!(
            HELD_ROUNDS.load(Ordering::SeqCst) >= rounds / 2,
            "walkers rarely inside the table being freed: the case shows nothing"
        );
    }
    Ok(())
}

//! qemu: cpu=cortex-a15,cortex-a7 smp=4 mem=128
//! timeout: 60
//! variant: ttbr_only arg=bug=ttbr_only expect=fail "STALE"
//! variant: lpae arg=format=lpae
//! variant: lpae_ttbr_only arg=format=lpae arg=bug=ttbr_only expect=fail "STALE"
//!
//! More address spaces than ASIDs, switched through the ASID allocator on four CPUs at
//! once.
//!
//! 300 user spaces (there are 255 usable ASIDs). Space `k` maps the same VA [`SHARED`] to
//! its own frame holding `tag(k)`, and its own VA `own_va(k)` to that frame too; nothing
//! else but the UART. Every CPU switches through all spaces in its own order, three times
//! over, with `LockedAddressSpace::activate` (the allocator's ASID, the architected
//! switch, the owed local flush after a rollover), and after every switch reads: the
//! shared VA must give `tag(k)`, its own VA too, and the previous space's own VA must
//! fault. Rollovers must happen, the programmed ASID must be the allocator's, never 0.
//!
//! Teeth: `bug=ttbr_only` switches `TTBR0` and leaves the ASID (and the TLB) alone, which
//! is what a kernel without ASID management would get wrong: the shared VA then still
//! translates to the previous space's frame ("STALE").
//!
//! `format=lpae` runs the same on long-descriptor tables: the allocator's
//! `activate_lpae` (one 64-bit `TTBR0` write carrying the ASID, the owed flush while
//! `EPD0` parks `TTBR0`); its `ttbr_only` variant rewrites the table base alone and keeps
//! the ASID in `TTBR0`, and must fail the same way.
//!
//! QEMU 7.2 flushes a vCPU's whole TLB whenever `CONTEXTIDR` changes, so on QEMU this test
//! cannot show an allocator bug that reuses an ASID without the owed flush (that one is
//! shown by the host model test `asid::tests::ignoring_the_local_flush_is_caught`); it
//! shows that every switch lands on the right tables with the right ASID, under
//! rollovers and four CPUs switching concurrently.

#![no_std]
#![no_main]

#[path = "smp_support/mod.rs"]
mod support;

use core::sync::atomic::{AtomicU32, Ordering};

use armv7_mm::arch::lpae as arch_lpae;
use armv7_mm::arch::mmu;
use armv7_mm::asid::{AsidContext, Switch};
use armv7_mm::locked::LockedAddressSpace;
use armv7_mm::short::Attributes;
use armv7_mm::table::Format;
use armv7_mm::{Asid, MapSize, PhysAddr};
use rt::fault::{self, FaultClass};
use rt::frames::KernelMemory;
use rt::{ensure, ensure_eq, println, Case, CaseResult};
use support::{range, tlb, LpaeSpace, Slot, Space, ALLOC};
use tock_registers::interfaces::Writeable;

rt::entry!(main);

const SPACES: usize = 300;
const PASSES: usize = 3;
/// The VA every space maps, each to its own frame.
const SHARED: u32 = 0x2000_0000;

/// The spaces, in the format the run uses (`format=lpae`: long descriptors).
static SPACE: [Slot<Space>; SPACES] = [const { Slot::new() }; SPACES];
static SPACE_LPAE: [Slot<LpaeSpace>; SPACES] = [const { Slot::new() }; SPACES];
static FRAME: [AtomicU32; SPACES] = [const { AtomicU32::new(0) }; SPACES];

const fn tag(k: usize) -> u32 {
    0xa51d_0000 | k as u32
}

/// A VA only space `k` maps.
const fn own_va(k: usize) -> u32 {
    0x2100_0000 + (k as u32) * 0x1000
}

fn lpae() -> bool {
    rt::arg("format") == Some("lpae")
}

fn main() -> ! {
    if lpae() {
        support::setup_lpae("asid_switch");
    } else {
        support::setup("asid_switch");
    }
    rt::cases::run(&[Case {
        name: "more_spaces_than_asids_on_four_cpus",
        run: many_spaces,
    }])
}

fn bug_ttbr_only() -> bool {
    rt::arg("bug") == Some("ttbr_only")
}

static SWITCHES: [AtomicU32; 4] = [const { AtomicU32::new(0) }; 4];
static FLUSHES: [AtomicU32; 4] = [const { AtomicU32::new(0) }; 4];
static ALLOCATED: [AtomicU32; 4] = [const { AtomicU32::new(0) }; 4];
static STALE: AtomicU32 = AtomicU32::new(0);
static BAD_ASID: AtomicU32 = AtomicU32::new(0);
/// First failure: cpu + 1, space, VA, value.
static FIRST: [AtomicU32; 4] = [const { AtomicU32::new(0) }; 4];

fn fail(cpu: usize, k: usize, va: u32, value: u32) {
    STALE.fetch_add(1, Ordering::SeqCst);
    if FIRST[0]
        .compare_exchange(0, cpu as u32 + 1, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok()
    {
        FIRST[1].store(k as u32, Ordering::SeqCst);
        FIRST[2].store(va, Ordering::SeqCst);
        FIRST[3].store(value, Ordering::SeqCst);
    }
}

/// Space `k`'s root table and ASID context, in the run's format.
fn space(k: usize) -> (PhysAddr, &'static AsidContext) {
    if lpae() {
        let s = SPACE_LPAE[k].get();
        (s.root(), s.asid_context())
    } else {
        let s = SPACE[k].get();
        (s.root(), s.asid_context())
    }
}

fn current_asid() -> Asid {
    if lpae() {
        arch_lpae::current_asid()
    } else {
        mmu::current_asid()
    }
}

/// Switches this CPU to space `k`.
fn switch(cpu: usize, k: usize) {
    let (root, ctx) = space(k);
    if bug_ttbr_only() {
        // The bug: the allocator is asked, but only the table base changes (the ASID
        // stays, and with it every entry the TLB holds). A bare register write: the crate's
        // own switch would see the ASID used over another table and drop its entries.
        let _ = ALLOC.switch_to(cpu, ctx);
        armv7_mm::arch::barrier::dsb_ishst();
        if lpae() {
            let asid = arch_lpae::current_asid();
            armv7_mm::arch::cp15::TTBR0_64.set(arch_lpae::ttbr_value(root, asid));
        } else {
            armv7_mm::arch::cp15::TTBR0.set(mmu::ttbr_value(root));
        }
        armv7_mm::arch::barrier::isb();
        SWITCHES[cpu].fetch_add(1, Ordering::Relaxed);
        return;
    }
    let sw: Switch = if lpae() {
        support::switch_to_lpae(SPACE_LPAE[k].get())
    } else {
        support::switch_to(SPACE[k].get())
    };
    SWITCHES[cpu].fetch_add(1, Ordering::Relaxed);
    FLUSHES[cpu].fetch_add(u32::from(sw.flush_local_tlb), Ordering::Relaxed);
    ALLOCATED[cpu].fetch_add(u32::from(sw.allocated), Ordering::Relaxed);
    if sw.asid.0 == 0 || current_asid() != sw.asid {
        BAD_ASID.fetch_add(1, Ordering::SeqCst);
    }
}

fn check(cpu: usize, k: usize, prev: Option<usize>) {
    for va in [SHARED, own_va(k)] {
        match fault::read32_user(va as usize) {
            Ok(v) if v == tag(k) => {}
            Ok(v) => fail(cpu, k, va, v),
            Err(f) => fail(cpu, k, va, f.status),
        }
    }
    if let Some(p) = prev.filter(|&p| p != k) {
        match fault::read32_user(own_va(p) as usize) {
            Err(f) if f.class() == FaultClass::Translation => {}
            Ok(v) => fail(cpu, k, own_va(p), v),
            Err(f) => fail(cpu, k, own_va(p), f.status),
        }
    }
}

fn runner(cpu: usize) {
    // A different order on every CPU: stride coprime with 300, different start.
    let stride = [7, 11, 13, 17][cpu % 4];
    let mut prev = None;
    for i in 0..PASSES * SPACES {
        let k = (i * stride + cpu * 37) % SPACES;
        switch(cpu, k);
        check(cpu, k, prev);
        prev = Some(k);
    }
    support::park();
}

/// Maps space `k`'s two VAs to its frame at `p`.
fn map_space<F: Format>(s: &LockedAddressSpace<KernelMemory, F>, k: usize, p: u32) -> CaseResult {
    let mut g = s.lock();
    for va in [SHARED, own_va(k)] {
        g.map(
            range(va, 4096),
            PhysAddr::new(p as u64),
            Attributes::USER_DATA,
            MapSize::Page4K,
        )
        .map_err(|e| println!("    map space {k}: {e:?}"))?;
    }
    Ok(())
}

fn many_spaces() -> CaseResult {
    ensure_eq!(rt::smp::cpus(), 4, "CPUs");
    for k in 0..SPACES {
        let frame = rt::frames::alloc(1, 4096).ok_or(())?;
        let p = frame.as_u64() as u32;
        for w in 0..1024 {
            // SAFETY: a fresh identity-mapped frame of ours.
            unsafe { ((p + w * 4) as *mut u32).write_volatile(tag(k)) };
        }
        FRAME[k].store(p, Ordering::SeqCst);
        if lpae() {
            let s = support::new_lpae_user_space();
            map_space(&s, k, p)?;
            SPACE_LPAE[k].put(s);
        } else {
            let s = support::new_user_space();
            map_space(&s, k, p)?;
            SPACE[k].put(s);
        }
    }
    let before = ALLOC.rollovers();
    rt::smp::start_all(runner);
    runner(0);
    rt::smp::wait_all();
    let rollovers = ALLOC.rollovers() - before;
    let sum = |a: &[AtomicU32; 4]| a.iter().map(|x| x.load(Ordering::SeqCst)).sum::<u32>();
    let (switches, flushes, allocated) = (sum(&SWITCHES), sum(&FLUSHES), sum(&ALLOCATED));
    let stale = STALE.load(Ordering::SeqCst);
    println!(
        "    {SPACES} spaces, 4 CPUs: {switches} switches, {allocated} ASID allocations, \
         {rollovers} rollovers, {flushes} owed local flushes; {stale} wrong reads"
    );
    if stale > 0 {
        println!(
            "    STALE: cpu {} on space {} read {:#010x} -> {:#010x} (expected {:#010x} or a fault)",
            FIRST[0].load(Ordering::SeqCst) - 1,
            FIRST[1].load(Ordering::SeqCst),
            FIRST[2].load(Ordering::SeqCst),
            FIRST[3].load(Ordering::SeqCst),
            tag(FIRST[1].load(Ordering::SeqCst) as usize)
        );
    }
    // Tear everything down (every CPU is parked).
    for k in 0..SPACES {
        // SAFETY: every runner has returned and parked.
        let asid = if lpae() {
            unsafe { SPACE_LPAE[k].take() }
                .destroy(tlb(), support::KeepMapped)
                .asid
        } else {
            unsafe { SPACE[k].take() }
                .destroy(tlb(), support::KeepMapped)
                .asid
        };
        let _ = ALLOC.release(asid);
        rt::frames::free(PhysAddr::new(FRAME[k].load(Ordering::SeqCst) as u64), 1);
    }
    ensure_eq!(stale, 0, "reads that saw another space");
    ensure_eq!(
        BAD_ASID.load(Ordering::SeqCst),
        0,
        "switches to a wrong ASID"
    );
    ensure_eq!(switches as usize, 4 * PASSES * SPACES, "switches");
    ensure!(
        rollovers >= 1,
        "no rollover: the test does not exceed the ASIDs"
    );
    ensure!(
        flushes >= 4,
        "every CPU owes a local flush after a rollover"
    );
    Ok(())
}

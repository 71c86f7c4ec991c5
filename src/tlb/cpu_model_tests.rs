//! The crate's own context-switch programs ([`crate::arch::switch`]) and gather, run on the CPU
//! model. Each test runs the real program, and its teeth run the same scenario with the
//! old or a wrong sequence ([`Variant`]) and show the model catching it.

use std::vec::Vec;

use super::*;
use crate::addr::VirtRange;
use crate::arch::switch::{
    park_lpae, park_short, switch_lpae, switch_short, switch_short_variant, ShortWalk, Variant,
    DESCRIPTOR_CLEAN,
};
use crate::asid::{AsidAllocator, AsidContext};
use crate::gather::{InFlight, MmuGather, Scope};
use crate::memory::Memory;
use crate::short::host::HostMemory;
use crate::short::{Attributes, Layout, Short};
use crate::sink::MapSize;
use crate::tlb::model::FreeChecker;
use crate::tlb::{Armv7Tlb, Shareability};

type Space<F = Short> = crate::table::AddressSpace<F, HostMemory>;

const N: u32 = 2;
/// Cortex-A15 r4p0 (QEMU's): no switch erratum.
const A15: u32 = 0x414F_C0F0;
/// Cortex-A9 r2p0: 754322.
const A9_R2P0: u32 = 0x412F_C090;
const WALK: ShortWalk = ShortWalk::SMP;
const MIB: u64 = 1 << 20;

fn range(va: u64, bytes: u64) -> VirtRange {
    VirtRange::from_start_len(VirtAddr::new(va as u32), bytes).unwrap()
}

/// A user space (split `N`) mapping each VA of `vas` to a fresh frame; returns the frames.
fn space_with<F: crate::table::tests::TestFormat>(
    mem: &HostMemory,
    vas: &[u64],
) -> (Space<F>, Vec<PhysAddr>) {
    space_in::<F>(mem, Layout::User { n: N as u8 }, vas)
}

fn space_in<F: crate::table::tests::TestFormat>(
    mem: &HostMemory,
    layout: Layout,
    vas: &[u64],
) -> (Space<F>, Vec<PhysAddr>) {
    let mut s = Space::<F>::new(mem.clone(), layout, F::ALL).unwrap();
    let mut frames = Vec::new();
    for &va in vas {
        let pa = mem.clone().allocate_frames(1, 4096).unwrap();
        s.map(range(va, 4096), pa, Attributes::USER_DATA, MapSize::Page4K)
            .unwrap();
        frames.push(pa);
    }
    (s, frames)
}

fn short_cpu(midr: u32, running: &Space, asid: u8) -> CpuModel {
    CpuModel::new(Regs {
        midr,
        contextidr: u32::from(asid),
        ttbcr: N,
        ttbr0: u64::from(crate::arch::switch::short_ttbr(running.root(), WALK)),
        ttbr1: 0x4000_0000 | u64::from(WALK.bits()),
    })
}

fn va(v: u64) -> VirtAddr {
    VirtAddr::new(v as u32)
}

/// Space A (ASID 1) maps pages in 4 MiB of its own 1 MiB regions, space B (ASID 2) one
/// page; the CPU runs A, switches A -> B -> A -> B with `variant`, speculating over A's and
/// B's VAs between every instruction; then A is unmapped entirely and its tables freed
/// through a gather on the same model (the crate's `Armv7Tlb` issuing into it). Returns
/// the stale translations the frees found, and the gather's invalidate counts.
fn switch_then_teardown_a(variant: Variant, sparse: bool) -> (usize, crate::gather::FlushReport) {
    let mem = HostMemory::new();
    let a_vas: Vec<u64> = if sparse {
        (0..4).map(|i| 0x1000_0000 + i * MIB).collect()
    } else {
        (0..4)
            .flat_map(|i| (0..40).map(move |p| 0x1000_0000 + i * MIB + p * 4096))
            .collect()
    };
    let (mut a, _) = space_with::<Short>(&mem, &a_vas);
    let (b, _) = space_with::<Short>(&mem, &[0x2000_0000]);
    let mut cpu = short_cpu(A15, &a, 1);
    cpu.speculate = a_vas.iter().map(|&v| va(v)).collect();
    cpu.speculate.push(va(0x2000_0000));
    {
        let tables: [(PhysAddr, &dyn WalkSource); 2] = [(a.root(), &a), (b.root(), &b)];
        let mut c = cpu.with(&tables);
        for (root, asid) in [(b.root(), 2), (a.root(), 1), (b.root(), 2)] {
            let _ = switch_short_variant(&mut c, root, WALK, Asid(asid), false, variant).unwrap();
        }
        c.speculate();
    }
    assert!(cpu.stray_walks().is_empty(), "{:?}", cpu.stray_walks());
    let mut checker = FreeChecker::new(mem.clone(), cpu.tlb().clone());
    let in_flight = InFlight::new();
    let report = {
        let backend = Armv7Tlb::new(cpu.without_walks(), Shareability::Local);
        let mut g = MmuGather::new(Scope::Asid(Asid(1)), backend, &mut checker, &in_flight);
        let r = range(0x1000_0000, 4 * MIB);
        a.unmap(r, &mut g).unwrap();
        a.free_tables(
            r,
            VirtRange::floor_ceiling(VirtAddr::new(0), 1 << 30),
            &mut g,
        )
        .unwrap();
        g.finish()
    };
    (checker.violations().len(), report)
}

#[test]
fn parked_switch_lets_asid_tagged_table_invalidates_free_tables_safely() {
    for sparse in [true, false] {
        let (stale, report) = switch_then_teardown_a(Variant::Correct, sparse);
        assert_eq!(stale, 0, "sparse={sparse}: {report:?}");
        let inv = report.invalidates;
        assert!(report.tables_unlinked > 0);
        assert_eq!(inv.all, 0, "never TLBIALL: {inv:?}");
        assert_eq!(inv.va_all_asids, 0, "tables are ASID-tagged: {inv:?}");
        if sparse {
            assert_eq!(inv.va, 4, "one op per page, the tables ride on them");
        } else {
            assert_eq!((inv.asid, inv.va), (1, 0), "dense: one TLBIASID");
        }
    }
}

#[test]
fn reserved_asid_switch_leaves_asid0_walk_entries() {
    // Teeth: the old switch (ASID 0 while TTBR0 changes) caches A's table entries under
    // ASID 0, which neither the ASID-tagged table invalidates nor TLBIASID reach.
    for sparse in [true, false] {
        let (stale, _) = switch_then_teardown_a(Variant::ReservedAsid, sparse);
        assert!(
            stale > 0,
            "sparse={sparse}: the model missed the ASID-0 entries"
        );
    }
}

/// P and R both map `V`, to different frames; the CPU last ran P under ASID 3 and now
/// switches to R under the same ASID. Returns what `V` translates to afterwards and the
/// program executed.
fn same_asid_other_table(
    variant: Variant,
    park_first: bool,
) -> (Option<PhysAddr>, PhysAddr, Vec<Insn>) {
    const V: u64 = 0x0800_0000;
    let mem = HostMemory::new();
    let (p, _) = space_with::<Short>(&mem, &[V]);
    let (r, rf) = space_with::<Short>(&mem, &[V]);
    let mut cpu = short_cpu(A15, &p, 3);
    cpu.speculate = std::vec![va(V)];
    let tables: [(PhysAddr, &dyn WalkSource); 2] = [(p.root(), &p), (r.root(), &r)];
    {
        let mut c = cpu.with(&tables);
        c.speculate();
        if park_first {
            // SAFETY: the model CPU has no memory to break.
            assert!(unsafe { park_short(&mut c) }.unwrap());
        }
        c.model.log.clear();
        let _ = switch_short_variant(&mut c, r.root(), WALK, Asid(3), false, variant).unwrap();
    }
    let log = core::mem::take(&mut cpu.log);
    (cpu.access(va(V), &tables), rf[0], log)
}

#[test]
fn same_asid_over_another_table_drops_its_entries_and_the_branch_predictor() {
    let (got, want, log) = same_asid_other_table(Variant::Correct, false);
    assert_eq!(got, Some(want));
    assert!(log.contains(&Insn::Tlbiasid(3)), "{log:?}");
    assert!(
        log.contains(&Insn::Bpiall),
        "TTBR0 changed without an ASID change: {log:?}"
    );
    // Parked first: P's entries under ASID 3 are still cached, and PD0 parking keeps
    // TTBR0 on P, so the switch still sees that the ASID was P's and drops them.
    let (got, want, log) = same_asid_other_table(Variant::Correct, true);
    assert_eq!(got, Some(want), "{log:?}");
    assert!(log.contains(&Insn::Tlbiasid(3)), "{log:?}");
    assert!(log.contains(&Insn::Bpiall));
}

#[test]
fn teeth_bare_ttbr0_rewrite_under_the_same_asid_is_caught() {
    let (got, want, log) = same_asid_other_table(Variant::BareSameAsid, false);
    assert_ne!(
        got,
        Some(want),
        "the old shortcut should translate through P's entries"
    );
    assert!(!log.contains(&Insn::Bpiall));
}

/// The CPU runs A (ASID 1, maps `V`) and switches to B (ASID 2, does not map `V`).
/// Returns what `V` translates to under B, and the program.
fn switch_a_to_b(midr: u32, variant: Variant) -> (Option<PhysAddr>, Vec<Insn>) {
    let (got, log, _) = switch_a_to_b_tagged(midr, variant);
    (got, log)
}

/// [`switch_a_to_b`], with the number of cached entries (leaf or walk-cache) tagged with
/// ASID 0, which no space has.
fn switch_a_to_b_tagged(midr: u32, variant: Variant) -> (Option<PhysAddr>, Vec<Insn>, usize) {
    const V: u64 = 0x0800_0000;
    let mem = HostMemory::new();
    let (a, _) = space_with::<Short>(&mem, &[V]);
    let (b, _) = space_with::<Short>(&mem, &[0x0900_0000]);
    let mut cpu = short_cpu(midr, &a, 1);
    cpu.speculate = std::vec![va(V), va(0x0900_0000)];
    let tables: [(PhysAddr, &dyn WalkSource); 2] = [(a.root(), &a), (b.root(), &b)];
    {
        let mut c = cpu.with(&tables);
        c.speculate();
        let _ = switch_short_variant(&mut c, b.root(), WALK, Asid(2), false, variant).unwrap();
        c.speculate();
    }
    let log = core::mem::take(&mut cpu.log);
    let asid0 = {
        let tlb = cpu.tlb().borrow();
        let leaves = tlb.leaves().iter().filter(|e| e.asid == Asid(0)).count();
        leaves + tlb.tables().iter().filter(|e| e.asid == Asid(0)).count()
    };
    (cpu.access(va(V), &tables), log, asid0)
}

#[test]
fn a9_754322_gets_a_full_dsb_before_the_asid_write() {
    let (got, log) = switch_a_to_b(A9_R2P0, Variant::Correct);
    assert_eq!(got, None, "B does not map V");
    let at = log
        .iter()
        .position(|i| matches!(i, Insn::SetContextidr(_)))
        .unwrap();
    assert_eq!(log[at - 1], Insn::DsbSy, "{log:?}");
    // Not on the A15.
    let (got, log) = switch_a_to_b(A15, Variant::Correct);
    assert_eq!(got, None);
    assert!(!log.contains(&Insn::DsbSy), "{log:?}");
}

#[test]
fn teeth_754322_without_the_barrier_leaks_a_walk_into_the_new_asid() {
    let (got, _) = switch_a_to_b(A9_R2P0, Variant::No754322Barrier);
    assert!(got.is_some(), "a walk of A completed under B's ASID");
    // The same program on a core without the erratum is fine: the model's teeth are the
    // erratum, not the program.
    assert_eq!(switch_a_to_b(A15, Variant::No754322Barrier).0, None);
}

#[test]
fn teeth_unparking_with_the_table_in_one_step_is_caught() {
    let (got, _) = switch_a_to_b(A15, Variant::OneIsb);
    assert!(
        got.is_some(),
        "PD0 cleared before the new TTBR0: A walked under B's ASID"
    );
}

#[test]
fn teeth_reserved_asid_switch_tags_entries_with_asid0() {
    // The old program walks A's and B's tables under ASID 0, and the model caches it.
    let (_, _, asid0) = switch_a_to_b_tagged(A15, Variant::ReservedAsid);
    assert!(asid0 > 0, "the model saw no entry tagged with ASID 0");
    // The crate's program leaves none, because it changes CONTEXTIDR only while TTBR0
    // cannot walk.
    let (_, log, asid0) = switch_a_to_b_tagged(A15, Variant::Correct);
    assert_eq!(asid0, 0);
    let ctx = log
        .iter()
        .position(|i| matches!(i, Insn::SetContextidr(_)))
        .unwrap();
    let park = log
        .iter()
        .position(|i| *i == Insn::SetTtbcr(N | (1 << 4)))
        .unwrap();
    assert!(park < ctx, "{log:?}");
}

#[test]
fn no_split_parks_on_ttbr1_and_refuses_without_it() {
    let mem = HostMemory::new();
    let (a, _) = space_with::<Short>(&mem, &[0x0800_0000]);
    let mut cpu = CpuModel::new(Regs {
        midr: A15,
        contextidr: 1,
        ttbcr: 0,
        ttbr0: 0,
        ttbr1: 0,
    });
    let mut c = cpu.without_walks();
    // SAFETY: the model CPU has no memory to break.
    let refused = unsafe { switch_short(&mut c, a.root(), WALK, Asid(1), false) };
    assert_eq!(
        refused,
        Err(crate::arch::error::ActivateError::NoParkingTable)
    );
    assert!(c.model.log.is_empty(), "nothing written on an error");
    c.model.regs.ttbr1 = 0x4000_0000;
    // SAFETY: the model CPU has no memory to break.
    let _ = unsafe { switch_short(&mut c, a.root(), WALK, Asid(2), false) }.unwrap();
    assert_eq!(
        c.model.log[1],
        Insn::SetTtbr0(0x4000_0000),
        "{:?}",
        c.model.log
    );
}

/// 300 LPAE spaces each map `S` to their own frame; one CPU switches through all of them
/// twice with the allocator (more spaces than ASIDs: rollovers). After every switch `S`
/// must translate to the running space's frame. `honour_flush = false` plays a kernel that
/// ignores the allocator's owed flush.
fn lpae_allocator_round(honour_flush: bool) -> Result<u64, std::string::String> {
    lpae_allocator_round_in(honour_flush, Layout::User { n: N as u8 }, (1 << 31) | N, 0)
}

/// [`lpae_allocator_round`] over spaces of `layout` on a CPU whose `TTBCR` is `ttbcr` and
/// `TTBR1` `ttbr1`.
fn lpae_allocator_round_in(
    honour_flush: bool,
    layout: Layout,
    ttbcr: u32,
    ttbr1: u64,
) -> Result<u64, std::string::String> {
    use crate::lpae::Lpae;
    const S: u64 = 0x0800_0000;
    let mem = HostMemory::new();
    let spaces: Vec<(Space<Lpae>, Vec<PhysAddr>)> = (0..300)
        .map(|_| space_in::<Lpae>(&mem, layout, &[S]))
        .collect();
    let ctxs: Vec<AsidContext> = (0..300).map(|_| AsidContext::new()).collect();
    let tables: Vec<(PhysAddr, &dyn WalkSource)> = spaces
        .iter()
        .map(|(s, _)| (s.root(), s as &dyn WalkSource))
        .collect();
    let alloc = AsidAllocator::<1>::new();
    let mut cpu = CpuModel::new(Regs {
        midr: A15,
        contextidr: 0,
        ttbcr,
        ttbr0: crate::arch::switch::lpae_ttbr(spaces[0].0.root(), Asid(0)),
        ttbr1,
    });
    cpu.speculate = std::vec![va(S)];
    for pass in 0..2 {
        for k in 0..spaces.len() {
            {
                let mut c = cpu.with(&tables);
                if honour_flush {
                    // SAFETY: the model CPU has no memory to break.
                    let _ =
                        unsafe { alloc.activate_lpae_on(&mut c, 0, &ctxs[k], spaces[k].0.root()) }
                            .unwrap();
                } else {
                    let sw = alloc.switch_to(0, &ctxs[k]).unwrap();
                    // SAFETY: as above.
                    let _ =
                        unsafe { switch_lpae(&mut c, spaces[k].0.root(), sw.asid, false) }.unwrap();
                }
                c.speculate();
            }
            let got = cpu.access(va(S), &tables);
            if got != Some(spaces[k].1[0]) {
                return Err(std::format!("pass {pass} space {k}: {got:?}"));
            }
        }
    }
    Ok(alloc.rollovers())
}

#[test]
fn lpae_allocator_path_switches_through_rollovers() {
    let rollovers = lpae_allocator_round(true).unwrap();
    assert!(rollovers >= 1, "no rollover exercised");
}

#[test]
fn teeth_lpae_switch_ignoring_the_owed_flush_is_caught() {
    assert!(lpae_allocator_round(false).is_err());
}

/// `TTBCR` of Linux's LPAE 3G/1G split: `EAE`, `T0SZ = 0`, `T1SZ = 2`.
const T1SZ_SPLIT: u32 = (1 << 31) | (2 << 16);

#[test]
fn lpae_t1sz_split_switches_through_rollovers() {
    // Processes below 3 GiB (`T0SZ = 0`), the kernel's level-2 table in `TTBR1`.
    let rollovers =
        lpae_allocator_round_in(true, Layout::UserLow { t1sz: 2 }, T1SZ_SPLIT, 0x4000_0000)
            .unwrap();
    assert!(rollovers >= 1, "no rollover exercised");
    assert!(
        lpae_allocator_round_in(false, Layout::UserLow { t1sz: 2 }, T1SZ_SPLIT, 0x4000_0000)
            .is_err()
    );
}

/// With a `T1SZ` split `TTBR1` holds the kernel's table of the top GiB (a level-2 table
/// for `T1SZ = 2`), which `TTBR0` (`T0SZ = 0`, walked from level 1) must never point at:
/// its 2 MiB entries would be read as 1 GiB blocks for process addresses. So parking and
/// an owed flush use `EPD0`, as with a `T0SZ` split, and `TTBR0` only ever gets the
/// process's table.
#[test]
fn lpae_t1sz_split_parks_with_epd0_never_on_ttbr1() {
    let mem = HostMemory::new();
    let (a, _) = space_in::<crate::lpae::Lpae>(&mem, Layout::UserLow { t1sz: 2 }, &[0x0800_0000]);
    let kernel = 0x4000_0000u64;
    let regs = Regs {
        midr: A15,
        contextidr: 0,
        ttbcr: T1SZ_SPLIT,
        ttbr0: crate::arch::switch::lpae_ttbr(a.root(), Asid(4)),
        ttbr1: kernel,
    };
    let epd0 = T1SZ_SPLIT | (1 << 7);
    let mut cpu = CpuModel::new(regs);
    let mut c = cpu.without_walks();
    // SAFETY: the model CPU has no memory to break.
    assert_eq!(unsafe { park_lpae(&mut c) }, Ok(true));
    assert_eq!(c.model.log[0], Insn::SetTtbcr(epd0), "{:?}", c.model.log);
    let mut cpu = CpuModel::new(regs);
    let mut c = cpu.without_walks();
    // SAFETY: as above.
    let done = unsafe { switch_lpae(&mut c, a.root(), Asid(5), true) }.unwrap();
    assert!(done.flushed_local);
    let log = &c.model.log;
    let park = log.iter().position(|i| *i == Insn::SetTtbcr(epd0));
    let flush = log.iter().position(|i| *i == Insn::Tlbiall);
    let unpark = log.iter().position(|i| *i == Insn::SetTtbcr(T1SZ_SPLIT));
    assert!(park.is_some() && park < flush && flush < unpark, "{log:?}");
    assert!(
        log.iter()
            .all(|i| !matches!(i, Insn::SetTtbr0Lpae(v) if v & 0xff_ffff_f000 == kernel)),
        "TTBR0 pointed at the kernel's table: {log:?}"
    );
}

#[test]
fn lpae_owed_flush_runs_parked() {
    let mem = HostMemory::new();
    let (a, _) = space_with::<crate::lpae::Lpae>(&mem, &[0x0800_0000]);
    let mut cpu = CpuModel::new(Regs {
        midr: A15,
        contextidr: 0,
        ttbcr: (1 << 31) | N,
        ttbr0: crate::arch::switch::lpae_ttbr(a.root(), Asid(4)),
        ttbr1: 0,
    });
    let mut c = cpu.without_walks();
    // SAFETY: the model CPU has no memory to break.
    let done = unsafe { switch_lpae(&mut c, a.root(), Asid(5), true) }.unwrap();
    assert!(done.flushed_local && done.asid_changed);
    let log = &c.model.log;
    let park = log
        .iter()
        .position(|i| *i == Insn::SetTtbcr((1 << 31) | N | (1 << 7)));
    let flush = log.iter().position(|i| *i == Insn::Tlbiall);
    let write = log.iter().position(|i| matches!(i, Insn::SetTtbr0Lpae(_)));
    let unpark = log.iter().position(|i| *i == Insn::SetTtbcr((1 << 31) | N));
    assert!(park < flush && flush < write && write < unpark, "{log:?}");
    assert!(park.is_some());
}

#[test]
fn walk_attributes_and_clean_reach_the_walker_on_every_core() {
    for mp in [false, true] {
        for core_coherent in [false, true] {
            for coherent_walk in [false, true] {
                let core_coherent = core_coherent && mp;
                let model = WalkCoherence {
                    core_coherent,
                    coherent_walk,
                };
                let walk = ShortWalk::for_core(mp, core_coherent);
                let clean = if coherent_walk {
                    CleanTo::Nowhere
                } else {
                    match DESCRIPTOR_CLEAN {
                        crate::arch::switch::CleanLevel::PoU => CleanTo::PoU,
                        crate::arch::switch::CleanLevel::PoC => CleanTo::PoC,
                    }
                };
                assert!(
                    model.walker_sees(walk.shareable(), clean),
                    "mp={mp} coherent={core_coherent} cohwalk={coherent_walk}"
                );
            }
        }
    }
}

#[test]
fn teeth_shareable_walks_on_a_core_outside_coherency_miss_a_pou_clean() {
    // The old choice: S = 1 everywhere, cleaned to PoU when walks are not coherent.
    let up = WalkCoherence {
        core_coherent: false,
        coherent_walk: false,
    };
    assert!(!up.walker_sees(true, CleanTo::PoU));
    // And with coherent walks it did not clean at all, which the S = 1 walk misses too.
    let up = WalkCoherence {
        core_coherent: false,
        coherent_walk: true,
    };
    assert!(!up.walker_sees(true, CleanTo::Nowhere));
}

#[test]
fn walk_attributes_follow_actlr_smp_on_parts_that_have_it() {
    let mp = 1 << 31;
    // Cortex-A9 with ACTLR.SMP clear: not coherent, no S.
    assert_eq!(
        ShortWalk::from_registers(0x412F_C090, mp, 0),
        ShortWalk::UP_MP
    );
    assert_eq!(
        ShortWalk::from_registers(0x412F_C090, mp, 1 << 6),
        ShortWalk::SMP
    );
    // No multiprocessing extensions.
    assert_eq!(ShortWalk::from_registers(0x413F_C080, 0, 0), ShortWalk::UP);
    // Brahma-B15 (Broadcom 0x00F) has ACTLR.SMP too: clear, it is outside coherency.
    assert_eq!(
        ShortWalk::from_registers(0x420F_00F0, mp, 0),
        ShortWalk::UP_MP
    );
    assert_eq!(
        ShortWalk::from_registers(0x420F_00F0, mp, 1 << 6),
        ShortWalk::SMP
    );
    // Another part: MPIDR.U decides.
    assert_eq!(
        ShortWalk::from_registers(0x5100_0000, mp, 0),
        ShortWalk::SMP
    );
    assert_eq!(
        ShortWalk::from_registers(0x5100_0000, mp | (1 << 30), 0),
        ShortWalk::UP_MP
    );
    assert_eq!(ShortWalk::SMP.bits(), 0x6a, "Linux TTB_FLAGS_SMP");
    assert_eq!(ShortWalk::UP_MP.bits(), 0x59, "Linux TTB_FLAGS_UP");
}

//! Block splitting (`unmap_split`, `protect_split`) through an `MmuGather` over the host
//! TLB model: every size of both formats, edges inside one block and across two, the
//! untouched part keeps its translation, the changed part has no cached translation left,
//! nothing is freed before a completed flush, no TLB conflict with several walks in
//! flight after every descriptor store, and a failed table allocation changes nothing.
//! Teeth: the split without its middle flush (`Mutant::SplitNoFlush`) is caught.

use std::format;
use std::string::String;
use std::vec::Vec;

use super::store_probe::{self, Mutant};
use super::tests::TestFormat;
use super::AddressSpace;
use crate::addr::{PhysAddr, VirtAddr, VirtRange};
use crate::gather::{InFlight, MmuGather, Scope};
use crate::lpae::Lpae;
use crate::short::host::HostMemory;
use crate::short::{Access, Attributes, Execute, Layout, Short};
use crate::sink::MapSize;
use crate::table::error::{ProtectError, UnmapError};
use crate::tlb::model::{FreeChecker, SharedTlbModel};
use crate::tlb::Asid;

const ASID: Asid = Asid(5);
const BASE: u64 = 0x2000_0000;
const PA: u64 = 0x9000_0000;
const PAGE: u64 = 4096;

fn range(start: u64, len: u64) -> VirtRange {
    VirtRange::from_start_len(VirtAddr::new(start as u32), len).unwrap()
}

/// A short-descriptor user space with `[BASE, BASE + bytes)` mapped as user data in leaves
/// of `size`, and its memory.
fn short_user_blocks(size: MapSize, bytes: u64) -> (HostMemory, AddressSpace<Short, HostMemory>) {
    let mem = HostMemory::new();
    let mut space =
        AddressSpace::<Short, _>::new(mem.clone(), Layout::User { n: 1 }, Short::ALL).unwrap();
    space
        .map(
            range(BASE, bytes),
            PhysAddr::new(PA),
            Attributes::USER_DATA,
            size,
        )
        .unwrap();
    (mem, space)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Unmap,
    Protect,
}

/// What one split run saw.
#[derive(Debug, Default)]
struct Seen {
    conflicts: Vec<String>,
    stale_frees: Vec<String>,
    /// VAs inside the range the model could still translate after the split returned
    /// (before the gather's finish).
    stale_inside: Vec<u64>,
    forced_flushes: u32,
}

/// Maps `blocks` blocks of `size` from `BASE`, caches one entry per block, then
/// splits with `op` over `[BASE + off, + len)` through a gather, with a probe walking every
/// page of the mapping (several walks in flight) after every descriptor store.
fn run<F: TestFormat>(
    mutant: Mutant,
    size: MapSize,
    blocks: u64,
    off: u64,
    len: u64,
    op: Op,
) -> Seen {
    let mem = HostMemory::new();
    let tlb = SharedTlbModel::new();
    let mut space = AddressSpace::<F, _>::new(mem.clone(), Layout::User { n: 1 }, F::ALL).unwrap();
    let all = range(BASE, size.bytes() * blocks);
    space
        .map(all, PhysAddr::new(PA), Attributes::USER_DATA, size)
        .unwrap();
    let leaves: Vec<_> = space.mappings(all).collect();
    assert_eq!(leaves.len() as u64, blocks);
    assert!(leaves.iter().all(|m| m.size == size), "{leaves:?}");
    for m in &leaves {
        tlb.borrow_mut().access(m.va, ASID, &space).expect("mapped");
    }
    // Several walks in flight after every store: one per 64 KiB (every copy of a
    // supersection, every large page), and every page of the first and last 64 KiB of the
    // range's edges.
    let cut = range(BASE + off, len);
    let mut vas: Vec<VirtAddr> = (0..all.len() / 0x1_0000)
        .map(|k| VirtAddr::new((BASE + k * 0x1_0000) as u32))
        .collect();
    for edge in [cut.start().as_u64(), cut.end().as_u64()] {
        let e = edge & !0xffff;
        for k in 0..32 {
            let v = e.wrapping_sub(0x1_0000) + k * PAGE;
            if v >= BASE && v < all.end().as_u64() {
                vas.push(VirtAddr::new(v as u32));
            }
        }
    }
    let (view, probe_tlb) = (space.view_for_test(), tlb.clone());
    store_probe::set(move |_, _| {
        probe_tlb.borrow_mut().access_in_flight(&vas, ASID, &view);
    });
    store_probe::set_mutant(mutant);
    let in_flight = InFlight::new();
    let mut checker = FreeChecker::new(mem.clone(), tlb.clone());
    let mut g = MmuGather::new(Scope::Asid(ASID), tlb.clone(), &mut checker, &in_flight);
    let frames_before = space.table_frames();
    match op {
        Op::Unmap => {
            let n = space.unmap_split(cut, &mut g).unwrap();
            assert!(n > 0);
        }
        Op::Protect => {
            let c = space
                .protect_split(cut, Access::UserRo, Execute::Never, &mut g)
                .unwrap()
                .expect("changed");
            assert!(c.split >= 1, "{c:?}");
            // What it changed: the whole range, every leaf now in it (pieces of the cut
            // blocks and whole leaves alike), none of them global or executable.
            assert_eq!(c.span, cut, "{c:?}");
            assert_eq!(c.leaves, space.mappings(cut).count(), "{c:?}");
            assert!(!c.global && !c.executable, "{c:?}");
        }
    }
    store_probe::set_mutant(Mutant::None);
    store_probe::clear();
    let mut seen = Seen::default();
    // Before the finish: nothing cached may translate the changed part with the old
    // attributes (the block's entry went with the middle flush; the make never mapped
    // the part inside with the old attributes).
    for v in (cut.start().as_u64()..cut.end().as_u64()).step_by(PAGE as usize) {
        let t = tlb
            .borrow()
            .translate(VirtAddr::new(v as u32), ASID, &space);
        let old = t.is_some_and(|t| t.leaf.attrs.access == Access::UserRw);
        if old {
            seen.stale_inside.push(v);
        }
    }
    let report = g.finish();
    seen.forced_flushes = report.forced_flushes;
    seen.conflicts = tlb
        .borrow()
        .conflicts()
        .iter()
        .map(|c| format!("{c}"))
        .collect();
    seen.stale_frees = checker
        .violations()
        .iter()
        .map(|v| format!("{v}"))
        .collect();
    if mutant != Mutant::None {
        return seen;
    }
    // The tables say: outside unchanged, inside unmapped / read-only.
    for v in (BASE..all.end().as_u64()).step_by(PAGE as usize) {
        let t = space.translate(VirtAddr::new(v as u32));
        let inside = cut.start().as_u64() <= v && v < cut.end().as_u64();
        match (op, inside) {
            (Op::Unmap, true) => assert!(t.is_none(), "{v:#x} still mapped"),
            _ => {
                let t = t.unwrap_or_else(|| panic!("{v:#x} lost"));
                assert_eq!(t.pa.as_u64(), PA + (v - BASE), "{v:#x}");
                let want = if inside {
                    Access::UserRo
                } else {
                    Access::UserRw
                };
                assert_eq!(t.mapping.attrs.access, want, "{v:#x}");
                assert_eq!(
                    t.mapping.attrs,
                    Attributes::USER_DATA.with_permissions(want, Execute::Never)
                );
            }
        }
    }
    // Leaves are as big as the edges allow: no run of pages where a bigger leaf fits.
    // (Short: at most 15 of each smaller size per edge; LPAE: 511 pages per edge.)
    let pieces = space.mappings(all).count() as u64;
    let bound = if F::LAST_LEVEL == 2 { 2 * 45 } else { 2 * 511 } + 2 * blocks;
    assert!(pieces <= bound, "{size:?}: {pieces} leaves");
    assert!(space.table_frames() >= frames_before);
    // Every frame the split or the unmap took is accounted for: tables plus root.
    assert_eq!(
        mem.outstanding(),
        space.table_frames() + F::root(Layout::User { n: 1 }).frames,
        "table frames leaked"
    );
    seen
}

fn check<F: TestFormat>(size: MapSize, blocks: u64, off: u64, len: u64) {
    for op in [Op::Unmap, Op::Protect] {
        let s = run::<F>(Mutant::None, size, blocks, off, len, op);
        assert!(s.conflicts.is_empty(), "{size:?} {op:?}: {:?}", s.conflicts);
        assert!(
            s.stale_frees.is_empty(),
            "{size:?} {op:?}: {:?}",
            s.stale_frees
        );
        assert!(
            s.stale_inside.is_empty(),
            "{size:?} {op:?}: {:x?}",
            s.stale_inside
        );
        // One break-before-make flush, also when the range cuts two blocks.
        assert_eq!(s.forced_flushes, 1, "{size:?} {op:?}");
    }
}

#[test]
fn split_every_block_size_short() {
    // A page inside one block (both edges in it), and a range across two blocks' edge.
    for (size, blocks) in [
        (MapSize::Super16M, 2),
        (MapSize::Section1M, 2),
        (MapSize::Large64K, 2),
    ] {
        let b = size.bytes();
        check::<Short>(size, blocks, b / 2 + PAGE, PAGE);
        check::<Short>(size, blocks, b - 2 * PAGE, 3 * PAGE);
        // From a block's start to one page before its end: only the end cuts.
        check::<Short>(size, blocks, 0, b - PAGE);
    }
    // A supersection cut on a section boundary splits into sections only.
    check::<Short>(MapSize::Super16M, 1, 1 << 20, 1 << 20);
}

#[test]
fn split_every_block_size_lpae() {
    let b = MapSize::Block2M.bytes();
    check::<Lpae>(MapSize::Block2M, 2, b / 2 + PAGE, PAGE);
    check::<Lpae>(MapSize::Block2M, 2, b - 2 * PAGE, 3 * PAGE);
    check::<Lpae>(MapSize::Block2M, 2, 0, b - PAGE);
}

/// `protect_split` of a cut inside one global block says the change was global, and
/// executable when the block was executable before or is after (the pieces are all the
/// change: nothing else is in the range).
fn protect_split_reports_global_and_executable<F: TestFormat>(size: MapSize) {
    for (attrs, execute) in [
        (Attributes::KERNEL_IMAGE, Execute::Never),
        (Attributes::KERNEL_DATA, Execute::Anywhere),
        (Attributes::KERNEL_DATA, Execute::Never),
    ] {
        let mem = HostMemory::new();
        let mut space = crate::table::tests::whole::<F>(&mem);
        let block = range(BASE, size.bytes());
        space.map(block, PhysAddr::new(PA), attrs, size).unwrap();
        let cut = range(BASE + size.bytes() / 2, PAGE);
        let mut rec = super::tests::Rec::default();
        let c = space
            .protect_split(cut, Access::KernelRo, execute, &mut rec)
            .unwrap()
            .expect("changed");
        let executable = attrs.execute != Execute::Never || execute != Execute::Never;
        assert_eq!((c.split, c.leaves), (1, 1), "{c:?}");
        assert!(c.global, "{attrs:?} {execute:?}: {c:?}");
        assert_eq!(c.executable, executable, "{attrs:?} {execute:?}: {c:?}");
        let t = space.translate(cut.start()).unwrap().mapping.attrs;
        assert_eq!(t, attrs.with_permissions(Access::KernelRo, execute));
        super::tests::teardown(space, &mem);
    }
}

#[test]
fn protect_split_reports_global_and_executable_short() {
    protect_split_reports_global_and_executable::<Short>(MapSize::Section1M);
    protect_split_reports_global_and_executable::<Short>(MapSize::Super16M);
}

#[test]
fn protect_split_reports_global_and_executable_lpae() {
    protect_split_reports_global_and_executable::<Lpae>(MapSize::Block2M);
}

/// A split takes the table frames it needs and no more: two supersections cut on either
/// side of their boundary need one L2 table each (one section of each is cut), and with
/// an allocator that has exactly two frames to give, both splits go through.
#[test]
fn a_split_takes_only_the_frames_it_needs() {
    for op in [Op::Unmap, Op::Protect] {
        let (mem, mut space) = short_user_blocks(MapSize::Super16M, 32 << 20);
        let before = mem.outstanding();
        let cut = range(BASE + (16 << 20) - 2 * PAGE, 3 * PAGE);
        let mut rec = super::tests::Rec::default();
        // The third allocation from now fails.
        mem.fail_nth(Some(3));
        match op {
            Op::Unmap => assert_eq!(space.unmap_split(cut, &mut rec), Ok(3)),
            Op::Protect => {
                let c = space
                    .protect_split(cut, Access::UserRo, Execute::Never, &mut rec)
                    .unwrap()
                    .expect("changed");
                assert_eq!(c.split, 2, "{c:?}");
            }
        }
        mem.fail_nth(None);
        assert_eq!(mem.outstanding(), before + 2, "{op:?}");
        assert_eq!(space.table_frames(), 2, "{op:?}");
    }
}

#[test]
fn split_of_a_one_gib_block() {
    let mem = HostMemory::new();
    let tlb = SharedTlbModel::new();
    let mut space = crate::table::tests::whole::<Lpae>(&mem);
    let gib = range(0x4000_0000, 1 << 30);
    space
        .map(
            gib,
            PhysAddr::new(0x4000_0000),
            Attributes::KERNEL_DATA,
            MapSize::Block1G,
        )
        .unwrap();
    assert_eq!(space.mappings(gib).next().unwrap().size, MapSize::Block1G);
    tlb.borrow_mut()
        .access(VirtAddr::new(0x4000_0000), ASID, &space)
        .unwrap();
    let in_flight = InFlight::new();
    let mut g = MmuGather::new(Scope::Kernel, tlb.clone(), mem.clone(), &in_flight);
    let guard = range(0x4020_1000, PAGE);
    assert_eq!(space.unmap_split(guard, &mut g).unwrap(), 1);
    let report = g.finish();
    assert_eq!(report.forced_flushes, 1, "{report}");
    let sizes: Vec<_> = space.mappings(gib).map(|m| m.size).collect();
    // 511 blocks of 2 MiB and 511 pages.
    assert_eq!(
        sizes.iter().filter(|&&s| s == MapSize::Block2M).count(),
        511
    );
    assert_eq!(sizes.iter().filter(|&&s| s == MapSize::Page4K).count(), 511);
    assert!(space.translate(VirtAddr::new(0x4020_1000)).is_none());
    assert_eq!(
        space.translate(VirtAddr::new(0x4020_2000)).unwrap().pa,
        PhysAddr::new(0x4020_2000)
    );
    assert!(tlb.borrow().conflicts().is_empty());
}

#[test]
fn teeth_a_split_without_its_middle_flush_is_caught() {
    for (size, off) in [
        (MapSize::Section1M, (1 << 19) + PAGE),
        (MapSize::Super16M, (1 << 23) + PAGE),
    ] {
        for op in [Op::Unmap, Op::Protect] {
            let s = run::<Short>(Mutant::SplitNoFlush, size, 1, off, PAGE, op);
            assert!(
                !s.conflicts.is_empty(),
                "{size:?} {op:?}: old block next to its pieces not caught"
            );
            assert!(
                !s.stale_inside.is_empty(),
                "{size:?} {op:?}: the changed part still served by the old block not caught"
            );
        }
    }
    let s = run::<Lpae>(
        Mutant::SplitNoFlush,
        MapSize::Block2M,
        1,
        1 << 20,
        PAGE,
        Op::Unmap,
    );
    assert!(!s.conflicts.is_empty());
}

#[test]
fn a_failed_table_allocation_leaves_the_block_as_it_was() {
    let (mem, mut space) = short_user_blocks(MapSize::Super16M, 16 << 20);
    let all = range(BASE, 16 << 20);
    let before = space.snapshot();
    let outstanding = mem.outstanding();
    let mut rec = super::tests::Rec::default();
    mem.fail_nth(Some(0));
    let cut = range(BASE + (3 << 20) + PAGE, PAGE);
    assert_eq!(
        space.unmap_split(cut, &mut rec),
        Err(UnmapError::OutOfMemory)
    );
    mem.fail_nth(Some(0));
    assert_eq!(
        space.protect_split(cut, Access::UserRo, Execute::Never, &mut rec),
        Err(ProtectError::OutOfMemory)
    );
    mem.fail_nth(None);
    assert!(space.snapshot() == before, "tables changed");
    assert_eq!(mem.outstanding(), outstanding);
    assert!(rec.leaves.is_empty() && rec.changed.is_empty() && rec.flushes_now == 0);
    // A cut on a section boundary needs no table: it goes through.
    let on_section = range(BASE + (3 << 20), 1 << 20);
    mem.fail_nth(Some(0));
    assert_eq!(space.unmap_split(on_section, &mut rec), Ok(1));
    mem.fail_nth(None);
    assert_eq!(rec.flushes_now, 1);
    assert_eq!(space.mappings(all).count(), 15);
}

#[test]
fn plain_unmap_and_protect_still_refuse_partial_blocks() {
    let (_mem, mut space) = short_user_blocks(MapSize::Section1M, 1 << 20);
    let all = range(BASE, 1 << 20);
    let mut rec = super::tests::Rec::default();
    let cut = range(BASE + PAGE, PAGE);
    assert!(matches!(
        space.unmap(cut, &mut rec),
        Err(UnmapError::PartialBlock { .. })
    ));
    assert!(matches!(
        space.protect(cut, Access::UserRo, Execute::Never, &mut rec),
        Err(ProtectError::PartialBlock { .. })
    ));
    // Without a cut block the split variants are the plain operations.
    assert_eq!(space.unmap_split(all, &mut rec), Ok(1));
    assert_eq!(rec.flushes_now, 0);
    // A protect that changes nothing splits nothing.
    space
        .map(
            all,
            PhysAddr::new(PA),
            Attributes::USER_DATA,
            MapSize::Section1M,
        )
        .unwrap();
    assert_eq!(
        space.protect_split(cut, Access::UserRw, Execute::Never, &mut rec),
        Ok(None)
    );
    assert_eq!(rec.flushes_now, 0);
}

#[test]
fn a_pxn_conflict_of_the_new_table_is_refused_before_anything_is_written() {
    // A kernel-executable section in a Whole space; making one page user-only
    // executable needs an L2 table with PXN set, which the rest (executable by the
    // kernel) cannot live in.
    let mem = HostMemory::new();
    let mut space = crate::table::tests::whole::<Short>(&mem);
    let all = range(BASE, 1 << 20);
    space
        .map(
            all,
            PhysAddr::new(PA),
            Attributes::KERNEL_IMAGE,
            MapSize::Section1M,
        )
        .unwrap();
    let before = space.snapshot();
    let mut rec = super::tests::Rec::default();
    let cut = range(BASE + PAGE, PAGE);
    assert_eq!(
        space.protect_split(cut, Access::UserRo, Execute::UserOnly, &mut rec),
        Err(ProtectError::PxnConflict(VirtAddr::new(BASE as u32)))
    );
    assert!(space.snapshot() == before);
    assert_eq!(rec.flushes_now, 0);
}

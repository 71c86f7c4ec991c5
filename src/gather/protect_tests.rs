//! `protect` through the gather, against the host TLB model: the permission change gets
//! the gather's invalidates (nothing cached with the old permissions survives `finish`,
//! nothing is freed), and replicated leaves are rewritten with break-before-make, checked
//! after every descriptor store (`table::store_probe`) so the instant a second walk could
//! load a mixed pair is seen. Each check is shown to catch the wrong sequence.

use std::cell::RefCell;
use std::format;
use std::rc::Rc;
use std::string::String;
use std::vec::Vec;

use super::*;
use crate::addr::VirtRange;
use crate::lpae::Lpae;
use crate::short::host::HostMemory;
use crate::short::{Access, Attributes, Execute, Layout, Short};
use crate::sink::{ChangedLeaf, MapSize};
use crate::table::store_probe::{self, Mutant};
use crate::table::tests::TestFormat;
use crate::table::AddressSpace;
use crate::tlb::model::SharedTlbModel;

const ASID: Asid = Asid(9);
const BASE: u64 = 0x1000_0000;

fn range(start: u64, len: u64) -> VirtRange {
    VirtRange::from_start_len(VirtAddr::new(start as u32), len).unwrap()
}

/// A process space of format `F` with `count` leaves of `size` from `BASE`, mapped
/// read-write to made-up frames, every leaf loaded into the TLB model by an access.
struct Rig<F: TestFormat> {
    mem: HostMemory,
    tlb: SharedTlbModel,
    space: AddressSpace<F, HostMemory>,
    range: VirtRange,
}

impl<F: TestFormat> Rig<F> {
    fn new(size: MapSize, count: u64) -> Self {
        let mem = HostMemory::new();
        let tlb = SharedTlbModel::new();
        let mut space =
            AddressSpace::<F, _>::new(mem.clone(), Layout::User { n: 1 }, F::ALL).unwrap();
        let range = range(BASE, size.bytes() * count);
        space
            .map(
                range,
                PhysAddr::new(0x8000_0000),
                Attributes::USER_DATA,
                size,
            )
            .unwrap();
        let rig = Self {
            mem,
            tlb,
            space,
            range,
        };
        for m in rig.space.mappings(range) {
            assert_eq!(m.size, size);
            rig.touch(m.va.as_u64());
        }
        assert_eq!(rig.cached(), count as usize, "every leaf cached");
        rig
    }

    fn touch(&self, va: u64) {
        let mut m = self.tlb.borrow_mut();
        assert!(m
            .access(VirtAddr::new(va as u32), ASID, &self.space)
            .is_some());
    }

    /// TLB leaf entries (loaded with the old permissions) inside the range.
    fn cached(&self) -> usize {
        let (start, end) = (self.range.start().as_u64(), self.range.end().as_u64());
        self.tlb
            .borrow()
            .leaves()
            .iter()
            .filter(|e| {
                e.leaf.va.as_u64() < end && e.leaf.va.as_u64() + e.leaf.size.bytes() > start
            })
            .count()
    }

    fn gather<'a>(&self, in_flight: &'a InFlight) -> MmuGather<'a, SharedTlbModel, HostMemory> {
        MmuGather::new(
            Scope::Asid(ASID),
            self.tlb.clone(),
            self.mem.clone(),
            in_flight,
        )
    }
}

/// Forwards everything but `leaf_changed`: a protect whose permission changes are never
/// invalidated (the hand-flushed protect a caller forgets).
struct DropChanges<'s, S: UnmapSink>(&'s mut S);

impl<S: UnmapSink> UnmapSink for DropChanges<'_, S> {
    fn leaf_cleared(&mut self, leaf: ClearedLeaf) {
        self.0.leaf_cleared(leaf)
    }
    fn table_unlinked(&mut self, va: VirtAddr, span: u64, global: bool) {
        self.0.table_unlinked(va, span, global)
    }
    fn table_memory_freed(&mut self, pa: PhysAddr, frames: usize) {
        self.0.table_memory_freed(pa, frames)
    }
    fn leaf_changed(&mut self, _: ChangedLeaf) {}
    fn flush_now(&mut self) {
        self.0.flush_now()
    }
}

fn protect_invalidates<F: TestFormat>(size: MapSize, count: u64) {
    let mut rig = Rig::<F>::new(size, count);
    let in_flight = InFlight::new();
    let mut g = rig.gather(&in_flight);
    let changed = rig
        .space
        .protect(rig.range, Access::UserRo, Execute::Never, &mut g)
        .unwrap()
        .expect("changed");
    assert_eq!(changed.leaves, count as usize);
    let report = g.finish();
    assert_eq!(report.leaves_changed, count as u32);
    assert_eq!((report.leaves_released, report.table_frames_freed), (0, 0));
    assert_eq!(
        rig.cached(),
        0,
        "{size:?}: old permissions still cached: {report}"
    );
    for m in rig.space.mappings(rig.range) {
        assert_eq!(m.attrs.access, Access::UserRo);
    }
    // A permission-only change of 1-copy leaves needs no break-before-make flush; the
    // replicated ones share one per BBM_BATCH leaves, and the finish adds its own.
    let bbm = if changed.replicated > 0 {
        changed.replicated.div_ceil(crate::table::BBM_BATCH) as u32
    } else {
        0
    };
    assert_eq!(report.forced_flushes, bbm, "{report}");
    // The last break-before-make flush covers everything: `finish` then has nothing left.
    assert_eq!(report.flushes, bbm.max(1), "{report}");

    // Teeth: the same protect without its invalidates leaves every old entry cached.
    let mut rig = Rig::<F>::new(size, count);
    let in_flight = InFlight::new();
    let mut g = rig.gather(&in_flight);
    rig.space
        .protect(
            rig.range,
            Access::UserRo,
            Execute::Never,
            &mut DropChanges(&mut g),
        )
        .unwrap();
    drop(g);
    assert_eq!(
        rig.cached(),
        count as usize,
        "{size:?}: the check has no teeth"
    );
}

#[test]
fn protect_through_the_gather_invalidates_every_size_short() {
    protect_invalidates::<Short>(MapSize::Page4K, 40);
    protect_invalidates::<Short>(MapSize::Large64K, 40);
    protect_invalidates::<Short>(MapSize::Section1M, 3);
    protect_invalidates::<Short>(MapSize::Super16M, 2);
}

#[test]
fn protect_through_the_gather_invalidates_every_size_lpae() {
    protect_invalidates::<Lpae>(MapSize::Page4K, 40);
    protect_invalidates::<Lpae>(MapSize::Block2M, 3);
}

#[test]
fn protect_of_many_pages_takes_the_threshold_fallback() {
    let mut rig = Rig::<Short>::new(MapSize::Page4K, 1024);
    let in_flight = InFlight::new();
    let mut g = rig.gather(&in_flight);
    rig.space
        .protect(rig.range, Access::UserRo, Execute::Never, &mut g)
        .unwrap();
    let report = g.finish();
    assert!(report.fell_back(), "{report}");
    assert_eq!(report.invalidates.asid, 1, "{report}");
    assert_eq!(report.invalidates.va, 0, "{report}");
    assert_eq!(rig.cached(), 0);
}

#[test]
fn protect_making_code_executable_invalidates_the_branch_predictor() {
    let mut rig = Rig::<Short>::new(MapSize::Page4K, 4);
    let in_flight = InFlight::new();
    let mut g = rig.gather(&in_flight);
    rig.space
        .protect(rig.range, Access::UserRo, Execute::UserOnly, &mut g)
        .unwrap();
    let report = g.finish();
    assert_eq!(report.invalidates.branch_predictor, 1, "{report}");
    // Data-only changes do not.
    let mut rig = Rig::<Short>::new(MapSize::Page4K, 4);
    let mut g = rig.gather(&in_flight);
    rig.space
        .protect(rig.range, Access::UserRw, Execute::Never, &mut g)
        .unwrap();
    let report = g.finish();
    assert_eq!(report.invalidates.branch_predictor, 0, "{report}");
}

/// What the store probe saw during one protect of replicated leaves.
fn replicated_protect(mutant: Mutant, size: MapSize, count: u64) -> Vec<String> {
    let mut rig = Rig::<Short>::new(size, count);
    // The first copy of each leaf and its VA: the probe's map from a store to its leaf.
    let groups: Vec<(usize, u64)> = rig
        .space
        .mappings(rig.range)
        .map(|m| {
            let p = rig.space.entry_ptr_for_test(m.va).unwrap();
            (p.as_ptr() as usize, m.va.as_u64())
        })
        .collect();
    let violations = Rc::new(RefCell::new(Vec::<String>::new()));
    let (seen, tlb) = (violations.clone(), rig.tlb.clone());
    store_probe::set(move |addr, value| {
        let Some(&(first, va)) = groups
            .iter()
            .find(|(g, _)| (*g..*g + 16 * 4).contains(&addr))
        else {
            return;
        };
        // SAFETY: `first` is the first of 16 descriptors of a live table of the space,
        // which stays allocated for the whole protect.
        let copies: Vec<u32> = (0..16)
            .map(|k| unsafe { core::ptr::read_volatile((first as *const u32).add(k)) })
            .collect();
        let valid: Vec<u32> = copies.iter().copied().filter(|&c| c != 0).collect();
        if valid.windows(2).any(|w| w[0] != w[1]) {
            seen.borrow_mut()
                .push(format!("{va:#x}: old and new copies valid at once"));
        }
        let held = tlb.borrow().leaves().iter().any(|e| {
            let a = e.leaf.va.as_u64();
            a <= va && va < a + e.leaf.size.bytes()
        });
        if value != 0 && held {
            seen.borrow_mut().push(format!(
                "{va:#x}: new copy written while a TLB holds the old leaf"
            ));
        }
    });
    store_probe::set_mutant(mutant);
    let in_flight = InFlight::new();
    let mut g = rig.gather(&in_flight);
    let changed = rig
        .space
        .protect(rig.range, Access::UserRo, Execute::Never, &mut g)
        .unwrap()
        .unwrap();
    store_probe::set_mutant(Mutant::None);
    store_probe::clear();
    let report = g.finish();
    assert_eq!(changed.leaves, count as usize);
    assert_eq!(rig.cached(), 0, "{report}");
    for m in rig.space.mappings(rig.range) {
        assert_eq!(m.attrs.access, Access::UserRo);
    }
    assert_eq!(rig.space.mappings(rig.range).count(), count as usize);
    let v = violations.borrow().clone();
    v
}

#[test]
fn replicated_leaves_are_rewritten_break_before_make() {
    // More than one BBM batch of large pages, and supersections.
    for (size, count) in [(MapSize::Large64K, 40), (MapSize::Super16M, 3)] {
        let v = replicated_protect(Mutant::None, size, count);
        assert!(v.is_empty(), "{size:?}: {v:?}");
    }
}

#[test]
fn teeth_replicated_leaves_written_in_place_are_caught() {
    for (size, count) in [(MapSize::Large64K, 4), (MapSize::Super16M, 1)] {
        let v = replicated_protect(Mutant::InPlace, size, count);
        assert!(
            v.iter()
                .any(|m| m.contains("old and new copies valid at once")),
            "{size:?}: {v:?}"
        );
    }
}

#[test]
fn teeth_break_before_make_without_the_flush_is_caught() {
    let v = replicated_protect(Mutant::NoFlush, MapSize::Large64K, 4);
    assert!(
        v.iter()
            .any(|m| m.contains("while a TLB holds the old leaf")),
        "{v:?}"
    );
    assert!(!v.iter().any(|m| m.contains("valid at once")), "{v:?}");
}

#[test]
fn refused_protect_reports_nothing() {
    let mut rig = Rig::<Short>::new(MapSize::Large64K, 2);
    let in_flight = InFlight::new();
    let mut g = rig.gather(&in_flight);
    let part = range(BASE + 4096, 4096);
    assert!(rig
        .space
        .protect(part, Access::UserRo, Execute::Never, &mut g)
        .is_err());
    assert_eq!(g.pending_invalidates(), Some(0));
    let report = g.finish();
    assert_eq!((report.leaves_changed, report.flushes), (0, 0), "{report}");
    assert_eq!(rig.cached(), 2);
}

/// The TLB conflicts the host TLB model saw during one protect of replicated leaves of
/// `size`, with several walks in flight after every descriptor store: one walk per copy of
/// every leaf (each reads the copy its VA indexes, none sees the others' fills, and none
/// consults the TLB first), as a Cortex-A15 with several table walks outstanding may do.
fn in_flight_conflicts(mutant: Mutant, size: MapSize, count: u64) -> (Vec<String>, u64) {
    let mut rig = Rig::<Short>::new(size, count);
    let step = size.bytes() / 16;
    let vas: Vec<VirtAddr> = (0..count * 16)
        .map(|k| VirtAddr::new((BASE + k * step) as u32))
        .collect();
    let (view, tlb) = (rig.space.view_for_test(), rig.tlb.clone());
    store_probe::set(move |_, _| {
        tlb.borrow_mut().access_in_flight(&vas, ASID, &view);
    });
    store_probe::set_mutant(mutant);
    let in_flight = InFlight::new();
    let mut g = rig.gather(&in_flight);
    rig.space
        .protect(rig.range, Access::UserRo, Execute::Never, &mut g)
        .unwrap()
        .unwrap();
    store_probe::set_mutant(Mutant::None);
    store_probe::clear();
    drop(g);
    let m = rig.tlb.borrow();
    let walks = m.stats().walks_in_flight;
    let conflicts = m.conflicts().iter().map(|c| format!("{c}")).collect();
    (conflicts, walks)
}

#[test]
fn replicated_protect_leaves_no_tlb_conflict_with_walks_in_flight() {
    for (size, count) in [(MapSize::Large64K, 20), (MapSize::Super16M, 2)] {
        let (c, walks) = in_flight_conflicts(Mutant::None, size, count);
        assert!(walks > 0, "{size:?}: the probe never walked");
        assert!(c.is_empty(), "{size:?}: {c:?}");
    }
}

#[test]
fn teeth_in_place_protect_of_a_large_page_and_a_supersection_is_a_tlb_conflict() {
    for (size, count) in [(MapSize::Large64K, 1), (MapSize::Super16M, 1)] {
        let (c, _) = in_flight_conflicts(Mutant::InPlace, size, count);
        assert!(
            c.iter().any(|m| m.contains("TLB conflict")),
            "{size:?}: in-place rewrite not caught: {c:?}"
        );
    }
}

#[test]
fn teeth_break_before_make_without_the_flush_is_a_tlb_conflict() {
    for (size, count) in [(MapSize::Large64K, 2), (MapSize::Super16M, 1)] {
        let (c, _) = in_flight_conflicts(Mutant::NoFlush, size, count);
        assert!(!c.is_empty(), "{size:?}: missing flush not caught");
    }
}

/// `protect` skips its conflict walk for `Execute::Never`, because no table can refuse it:
/// every table context of both formats allows execute-never leaves.
#[test]
fn every_table_allows_execute_never() {
    use crate::table::Format;
    for ctx in [None, Some(false), Some(true)] {
        assert!(
            <Short as Format>::table_allows(ctx, Execute::Never),
            "{ctx:?}"
        );
    }
    assert!(<Lpae as Format>::table_allows((), Execute::Never));
}

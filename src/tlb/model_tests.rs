//! Host tests of the TLB model over a small fake page table (the real walkers are tested
//! on their own; these tests must not depend on them).

use std::cell::RefCell;
use std::collections::HashMap;
use std::vec;
use std::vec::Vec;

use super::*;
use crate::table::attrs::Attributes;
use crate::tlb::armv7::{Armv7Tlb, Recorder};
use crate::tlb::Shareability;

/// An L1 entry of the fake short-descriptor tables.
#[derive(Clone, Copy, Debug)]
enum L1 {
    Section { pa: u64, global: bool },
    Table(u64),
}

/// An L2 table's contents: L2 index -> (page PA, global).
type L2Table = HashMap<u32, (u64, bool)>;

/// Short-descriptor-shaped tables in hash maps: L1 by MiB index, L2 tables by their
/// physical address (so a table's memory can outlive its link, as freed memory does).
#[derive(Default)]
struct Fake {
    l1: HashMap<u32, L1>,
    /// Table PA -> its contents.
    l2: RefCell<HashMap<u64, L2Table>>,
}

impl Fake {
    fn link_table(&mut self, va: u32, table: u64) {
        self.l1.insert(va >> 20, L1::Table(table));
        self.l2.borrow_mut().entry(table).or_default();
    }
    fn unlink(&mut self, va: u32) {
        self.l1.remove(&(va >> 20));
    }
    fn section(&mut self, va: u32, pa: u64, global: bool) {
        self.l1.insert(va >> 20, L1::Section { pa, global });
    }
    /// Writes an L2 entry into the table memory at `table` (linked or not).
    fn write_page(&self, table: u64, va: u32, page: Option<(u64, bool)>) {
        let mut l2 = self.l2.borrow_mut();
        let t = l2.entry(table).or_default();
        let idx = (va >> 12) & 0xff;
        match page {
            Some(p) => t.insert(idx, p),
            None => t.remove(&idx),
        };
    }
    fn leaf_in_table(&self, table: u64, va: VirtAddr) -> Option<WalkLeaf> {
        let l2 = self.l2.borrow();
        let (pa, global) = *l2.get(&table)?.get(&((va.as_u32() >> 12) & 0xff))?;
        Some(WalkLeaf {
            va: va.align_down(PAGE_SIZE),
            size: MapSize::Page4K,
            pa: PhysAddr::new(pa),
            global,
            attrs: Attributes::USER_DATA,
        })
    }
}

impl WalkSource for Fake {
    fn walk(&self, va: VirtAddr) -> Walk {
        match self.l1.get(&(va.as_u32() >> 20)) {
            None => Walk::default(),
            Some(&L1::Section { pa, global }) => Walk {
                tables: [None, None],
                leaf: Some(WalkLeaf {
                    va: va.align_down(1 << 20),
                    size: MapSize::Section1M,
                    pa: PhysAddr::new(pa),
                    global,
                    attrs: Attributes::USER_DATA,
                }),
            },
            Some(&L1::Table(table)) => Walk {
                tables: [
                    Some(WalkTable {
                        level: 1,
                        span_va: va.align_down(1 << 20),
                        span: 1 << 20,
                        table: PhysAddr::new(table),
                    }),
                    None,
                ],
                leaf: self.leaf_in_table(table, va),
            },
        }
    }

    fn walk_from(&self, level: u8, table: PhysAddr, va: VirtAddr) -> Walk {
        assert_eq!(level, 1, "short descriptors have one table level");
        Walk {
            tables: [None, None],
            leaf: self.leaf_in_table(table.as_u64(), va),
        }
    }
}

const VA: u32 = 0x1234_5000;
const TABLE: u64 = 0x8000_0400; // a 1 KiB L2 table in the frame 0x8000_0000
const FRAME_A: u64 = 0x9000_0000;
const FRAME_B: u64 = 0x9100_0000;
const ONE: Asid = Asid(1);
const TWO: Asid = Asid(2);

fn va(a: u32) -> VirtAddr {
    VirtAddr::new(a)
}

/// `VA` -> `FRAME_A` through the L2 table at `TABLE`.
fn mapped(global: bool) -> Fake {
    let mut f = Fake::default();
    f.link_table(VA, TABLE);
    f.write_page(TABLE, VA, Some((FRAME_A, global)));
    f
}

fn pa_of(t: Option<Translation>) -> Option<u64> {
    t.map(|t| t.pa.as_u64())
}

/// One complete batch with one operation.
fn batch(tlb: &mut TlbModel, op: impl FnOnce(&mut TlbModel)) {
    tlb.prepare();
    op(tlb);
    tlb.complete();
}

#[test]
fn serves_stale_translation_until_the_right_invalidate() {
    type Op = fn(&mut TlbModel);
    // Invalidates that must NOT clear an nG entry of ASID 1 for VA.
    let wrong: [(&str, Op); 4] = [
        ("other VA", |t| t.invalidate_va(va(VA + 0x1000), ONE)),
        ("other ASID", |t| t.invalidate_va(va(VA), TWO)),
        ("other ASID flush", |t| t.invalidate_asid(TWO)),
        ("other VA, all ASIDs", |t| {
            t.invalidate_va_all_asids(va(VA - 0x1000))
        }),
    ];
    // Each of these must clear it.
    let right: [(&str, Op); 4] = [
        ("by VA", |t| t.invalidate_va(va(VA + 0x123), ONE)),
        ("by VA, all ASIDs", |t| t.invalidate_va_all_asids(va(VA))),
        ("by ASID", |t| t.invalidate_asid(ONE)),
        ("all", |t| t.invalidate_all()),
    ];
    for (name, op) in right {
        let f = mapped(false);
        let mut tlb = TlbModel::new();
        assert_eq!(pa_of(tlb.access(va(VA + 8), ONE, &f)), Some(FRAME_A + 8));
        // Rewrite to B without invalidating: still A, from the TLB.
        f.write_page(TABLE, VA, Some((FRAME_B, false)));
        let t = tlb.access(va(VA + 8), ONE, &f).unwrap();
        assert_eq!((t.pa.as_u64(), t.via), (FRAME_A + 8, Via::Tlb));
        for (wname, wop) in wrong {
            batch(&mut tlb, wop);
            assert_eq!(
                pa_of(tlb.access(va(VA), ONE, &f)),
                Some(FRAME_A),
                "'{wname}' cleared the entry"
            );
        }
        batch(&mut tlb, op);
        let t = tlb.access(va(VA), ONE, &f).unwrap();
        assert_eq!(t.pa.as_u64(), FRAME_B, "'{name}' did not clear the entry");
        assert_ne!(t.via, Via::Tlb, "{name}");
        assert_eq!(tlb.check_protocol(), Ok(()));
    }
}

#[test]
fn global_entries_match_every_asid_and_survive_asid_flushes() {
    let f = mapped(true);
    let mut tlb = TlbModel::new();
    tlb.access(va(VA), ONE, &f);
    f.write_page(TABLE, VA, Some((FRAME_B, true)));
    // Loaded by ASID 1, served to ASID 2.
    assert_eq!(pa_of(tlb.access(va(VA), TWO, &f)), Some(FRAME_A));
    // No ASID flush touches a global entry.
    batch(&mut tlb, |t| t.invalidate_asid(ONE));
    batch(&mut tlb, |t| t.invalidate_asid(TWO));
    assert_eq!(pa_of(tlb.access(va(VA), TWO, &f)), Some(FRAME_A));
    // By-VA with any ASID does.
    batch(&mut tlb, |t| t.invalidate_va(va(VA), Asid(77)));
    assert_eq!(pa_of(tlb.access(va(VA), TWO, &f)), Some(FRAME_B));
}

#[test]
fn non_global_entries_are_per_asid() {
    let f = mapped(false);
    let mut tlb = TlbModel::new();
    tlb.access(va(VA), ONE, &f);
    f.write_page(TABLE, VA, Some((FRAME_B, false)));
    // ASID 2 has no leaf of its own; it reuses ASID 1's walk-cache entry? No: those are
    // ASID-tagged too, so it walks from the root and sees B.
    let t = tlb.access(va(VA), TWO, &f).unwrap();
    assert_eq!((t.pa.as_u64(), t.via), (FRAME_B, Via::Walk));
    assert_eq!(pa_of(tlb.access(va(VA), ONE, &f)), Some(FRAME_A));
    // Flushing ASID 1 leaves ASID 2's entry, and vice versa.
    f.write_page(TABLE, VA, None);
    batch(&mut tlb, |t| t.invalidate_asid(ONE));
    assert_eq!(pa_of(tlb.access(va(VA), ONE, &f)), None);
    assert_eq!(pa_of(tlb.access(va(VA), TWO, &f)), Some(FRAME_B));
    // By VA for all ASIDs clears ASID 2's too.
    batch(&mut tlb, |t| t.invalidate_va_all_asids(va(VA)));
    assert_eq!(pa_of(tlb.access(va(VA), TWO, &f)), None);
}

#[test]
fn sections_are_invalidated_by_any_va_inside() {
    let mut f = Fake::default();
    f.section(0x4010_0000, 0x7000_0000, true);
    let mut tlb = TlbModel::new();
    assert_eq!(
        pa_of(tlb.access(va(0x4012_3456), ONE, &f)),
        Some(0x7002_3456)
    );
    f.section(0x4010_0000, 0x7100_0000, true);
    batch(&mut tlb, |t| t.invalidate_va(va(0x4020_0000), ONE)); // next MiB: no
    assert_eq!(
        pa_of(tlb.access(va(0x4010_0000), ONE, &f)),
        Some(0x7000_0000)
    );
    batch(&mut tlb, |t| t.invalidate_va(va(0x401F_F000), ONE)); // last page inside
    assert_eq!(
        pa_of(tlb.access(va(0x4010_0000), ONE, &f)),
        Some(0x7100_0000)
    );
}

#[test]
fn invalidate_counts_only_between_prepare_and_complete() {
    let f = mapped(false);
    let mut tlb = TlbModel::new();
    tlb.access(va(VA), ONE, &f);
    f.write_page(TABLE, VA, Some((FRAME_B, false)));

    // Issued before prepare: never applied, even by the next complete.
    tlb.invalidate_va(va(VA), ONE);
    tlb.prepare();
    tlb.complete();
    assert_eq!(pa_of(tlb.access(va(VA), ONE, &f)), Some(FRAME_A));
    assert_eq!(
        tlb.check_protocol(),
        Err(ProtocolError::Unprepared {
            count: 1,
            first: Invalidate::Va(va(VA), ONE)
        })
    );

    // Issued after complete (batch closed): the same.
    let mut tlb = TlbModel::new();
    tlb.access(va(VA), ONE, &f);
    tlb.prepare();
    tlb.complete();
    tlb.invalidate_all();
    assert!(tlb.check_protocol().is_err());
    assert_eq!(tlb.leaves().len(), 1);

    // Prepared but not completed: pending, still served.
    let mut tlb = TlbModel::new();
    f.write_page(TABLE, VA, Some((FRAME_A, false)));
    tlb.access(va(VA), ONE, &f);
    f.write_page(TABLE, VA, Some((FRAME_B, false)));
    tlb.prepare();
    tlb.invalidate_va(va(VA), ONE);
    assert_eq!(pa_of(tlb.access(va(VA), ONE, &f)), Some(FRAME_A));
    assert_eq!(tlb.pending(), [Invalidate::Va(va(VA), ONE)]);
    assert_eq!(
        tlb.check_protocol(),
        Err(ProtocolError::NotCompleted { pending: 1 })
    );
    let stale = tlb.check_freed(PhysAddr::new(FRAME_A), 1).unwrap_err();
    assert!(stale.awaiting_completion, "{stale}");
    tlb.complete();
    assert_eq!(pa_of(tlb.access(va(VA), ONE, &f)), Some(FRAME_B));
    assert_eq!(tlb.check_freed(PhysAddr::new(FRAME_A), 1), Ok(()));
    assert_eq!(tlb.check_protocol(), Ok(()));
}

#[test]
fn freed_frame_still_reachable_is_reported() {
    let f = mapped(false);
    let mut tlb = TlbModel::new();
    tlb.access(va(VA), ONE, &f);
    // Unmap without invalidating, then "free" A: reported.
    f.write_page(TABLE, VA, None);
    let err = tlb.check_freed(PhysAddr::new(FRAME_A), 1).unwrap_err();
    assert_eq!(
        err.entry,
        CachedEntry::Leaf(LeafEntry {
            leaf: WalkLeaf {
                va: va(VA),
                size: MapSize::Page4K,
                pa: PhysAddr::new(FRAME_A),
                global: false,
                attrs: Attributes::USER_DATA,
            },
            asid: ONE
        })
    );
    assert!(!err.awaiting_completion);
    let msg = std::format!("{err}");
    assert!(
        msg.contains("0x12345000") && msg.contains("ASID 1"),
        "{msg}"
    );
    // Overlap at either end of a multi-frame range counts; an adjacent range does not.
    assert!(tlb.check_freed(PhysAddr::new(FRAME_A - 0x3000), 4).is_err());
    assert!(tlb.check_freed(PhysAddr::new(FRAME_A - 0x3000), 3).is_ok());
    assert!(tlb.check_freed(PhysAddr::new(FRAME_A + 0x1000), 1).is_ok());
    // Wrong invalidates leave it reported.
    batch(&mut tlb, |t| t.invalidate_va(va(VA), TWO));
    batch(&mut tlb, |t| t.invalidate_va(va(VA + 0x1000), ONE));
    assert!(tlb.check_freed(PhysAddr::new(FRAME_A), 1).is_err());
    batch(&mut tlb, |t| t.invalidate_va(va(VA), ONE));
    assert_eq!(tlb.check_freed(PhysAddr::new(FRAME_A), 1), Ok(()));
    // The faulting access now caches nothing.
    assert_eq!(tlb.access(va(VA), ONE, &f), None);
    assert_eq!(tlb.leaves().len(), 0);
}

#[test]
fn large_mappings_overlap_freed_frames_inside_them() {
    let mut f = Fake::default();
    f.section(0x4010_0000, 0x7000_0000, false);
    let mut tlb = TlbModel::new();
    tlb.access(va(0x4010_0000), ONE, &f);
    // Any frame of the 1 MiB section.
    assert!(tlb.check_freed(PhysAddr::new(0x700F_F000), 1).is_err());
    assert!(tlb.check_freed(PhysAddr::new(0x7010_0000), 1).is_ok());
}

/// A table freed and reused while the walk cache still points at it.
#[test]
fn walk_cache_serves_freed_table_until_va_in_its_span_is_invalidated() {
    let mut f = mapped(false);
    let mut tlb = TlbModel::new();
    tlb.access(va(VA), ONE, &f);
    assert_eq!(tlb.tables().len(), 1);
    // Unmap the page and unlink the table, no invalidate yet. The table's frame is about
    // to be freed: reported as a walk-cache entry.
    f.write_page(TABLE, VA, None);
    f.unlink(VA);
    let frame = PhysAddr::new(TABLE & !0xfff);
    let err = tlb.check_freed(frame, 1).unwrap_err();
    assert_eq!(
        err.entry,
        CachedEntry::Table(TableEntry {
            table: WalkTable {
                level: 1,
                span_va: va(VA & !0xF_FFFF),
                span: 1 << 20,
                table: PhysAddr::new(TABLE)
            },
            asid: ONE
        })
    );
    assert!(std::format!("{err}").contains("walk-cache"));

    // The memory is reused (say, as a table for something else) and now "maps" another
    // VA of the old span: an access through the stale walk-cache entry finds it although
    // the L1 entry is gone.
    let other = VA + 0x4000;
    f.write_page(TABLE, other, Some((0xDEAD_0000, false)));
    let t = tlb.access(va(other), ONE, &f).unwrap();
    assert_eq!((t.pa.as_u64(), t.via), (0xDEAD_0000, Via::WalkCache));

    // Invalidates that do not cover the walk-cache entry: a VA outside the table's span
    // (the next MiB), the right VA for another ASID, and a flush of another ASID.
    batch(&mut tlb, |t| {
        t.invalidate_va(va((VA & !0xF_FFFF) + (1 << 20)), ONE)
    });
    batch(&mut tlb, |t| t.invalidate_va(va(VA), TWO));
    batch(&mut tlb, |t| t.invalidate_asid(TWO));
    assert!(tlb
        .stale_entries(frame, 1)
        .any(|s| matches!(s.entry, CachedEntry::Table(_))));
    // (`other`'s leaf survived them too, so use a page not cached yet.)
    f.write_page(TABLE, other + 0x1000, Some((0xBEEF_0000, false)));
    let t = tlb.access(va(other + 0x1010), ONE, &f).unwrap();
    assert_eq!((t.pa.as_u64(), t.via), (0xBEEF_0010, Via::WalkCache));

    // By-VA anywhere inside the span (not necessarily a mapped page) drops it.
    batch(&mut tlb, |t| t.invalidate_va(va(VA & !0xF_FFFF), ONE));
    assert!(!tlb
        .stale_entries(frame, 1)
        .any(|s| matches!(s.entry, CachedEntry::Table(_))));
    // (The leaves loaded through it are still cached: separate entries.)
    assert_eq!(pa_of(tlb.access(va(other), ONE, &f)), Some(0xDEAD_0000));
    batch(&mut tlb, |t| {
        t.invalidate_va(va(other), ONE);
        t.invalidate_va(va(other + 0x1000), ONE);
    });
    assert_eq!(tlb.check_freed(frame, 1), Ok(()));
    assert_eq!(tlb.access(va(other), ONE, &f), None);
    assert!(tlb.tables().is_empty());
}

/// An invalidate by ASID drops that ASID's walk-cache entries (every level of lookup),
/// and only that ASID's: an entry for the same table walked under another ASID stays and
/// keeps the freed table frame reachable.
#[test]
fn asid_flush_drops_the_walk_cache_entries_of_its_asid_only() {
    let mut f = mapped(false);
    let mut tlb = TlbModel::new();
    tlb.access(va(VA), ONE, &f);
    tlb.access(va(VA), TWO, &f);
    assert_eq!(tlb.tables().len(), 2, "one walk-cache entry per ASID");
    f.write_page(TABLE, VA, None);
    f.unlink(VA);
    let frame = PhysAddr::new(TABLE & !0xfff);
    let walk_asids = |tlb: &TlbModel| -> Vec<u8> {
        tlb.stale_entries(frame, 1)
            .filter_map(|s| match s.entry {
                CachedEntry::Table(e) => Some(e.asid.0),
                CachedEntry::Leaf(_) => None,
            })
            .collect()
    };
    assert_eq!(walk_asids(&tlb), [1, 2]);
    // Issued but not completed: still reachable, reported as awaiting completion.
    tlb.prepare();
    tlb.invalidate_asid(ONE);
    assert!(tlb.stale_entries(frame, 1).any(
        |s| matches!(s.entry, CachedEntry::Table(e) if e.asid == ONE) && s.awaiting_completion
    ));
    tlb.complete();
    assert_eq!(walk_asids(&tlb), [2], "ASID 1's entry gone, ASID 2's kept");
    // ASID 2 still walks through the unlinked table's memory; ASID 1 walks from the root.
    f.write_page(TABLE, VA + 0x4000, Some((0xDEAD_0000, false)));
    assert_eq!(tlb.access(va(VA + 0x4000), ONE, &f), None);
    let t = tlb.access(va(VA + 0x4000), TWO, &f).unwrap();
    assert_eq!((t.pa.as_u64(), t.via), (0xDEAD_0000, Via::WalkCache));
    batch(&mut tlb, |t| t.invalidate_asid(TWO));
    assert_eq!(tlb.check_freed(frame, 1), Ok(()));
    assert!(tlb.tables().is_empty());
}

#[test]
fn walk_cache_entries_dropped_by_all_asids_and_all() {
    type Op = fn(&mut TlbModel);
    let ops: [Op; 2] = [
        |t| t.invalidate_va_all_asids(va(VA + 0x8_0000)),
        |t| t.invalidate_all(),
    ];
    for op in ops {
        let f = mapped(false);
        let mut tlb = TlbModel::new();
        tlb.access(va(VA), ONE, &f);
        tlb.access(va(VA), TWO, &f);
        assert_eq!(tlb.tables().len(), 2, "one walk-cache entry per ASID");
        batch(&mut tlb, op);
        assert_eq!(tlb.tables().len(), 0);
    }
}

#[test]
fn translate_does_not_cache() {
    let f = mapped(false);
    let tlb = TlbModel::new();
    let t = tlb.translate(va(VA), ONE, &f).unwrap();
    assert_eq!((t.pa.as_u64(), t.via), (FRAME_A, Via::Walk));
    assert!(tlb.leaves().is_empty() && tlb.tables().is_empty());
}

#[test]
fn counters_match_the_hardware_backend() {
    fn drive(b: &mut dyn TlbBackend) {
        b.prepare();
        for i in 0..5 {
            b.invalidate_va(va(i << 12), ONE);
        }
        b.invalidate_va_all_asids(va(0));
        b.invalidate_asid(TWO);
        b.invalidate_all();
        b.invalidate_branch_predictor();
        b.complete();
        b.prepare();
        b.complete();
    }
    let mut model = TlbModel::new();
    let mut hw = Armv7Tlb::new(Recorder::default(), Shareability::InnerShareable);
    drive(&mut model);
    drive(&mut hw);
    assert_eq!(model.counters(), hw.counters());
    assert_eq!(
        model.counters(),
        TlbCounters {
            va: 5,
            va_all_asids: 1,
            asid: 1,
            all: 1,
            branch_predictor: 1,
            prepares: 2,
            completions: 2,
            errata: 0
        }
    );
}

/// A `Memory` over a fake address range, recording frees.
struct FakeMemory {
    freed: Vec<(u64, usize)>,
}

// SAFETY: test memory; see the type's docs for what it hands out.
unsafe impl Memory for FakeMemory {
    fn allocate_frames(&mut self, _: usize, _: usize) -> Option<PhysAddr> {
        None
    }
    fn free_frames(&mut self, pa: PhysAddr, count: usize) {
        self.freed.push((pa.as_u64(), count));
    }
    fn phys_to_virt(&self, _: PhysAddr) -> NonNull<u8> {
        NonNull::dangling()
    }
}

#[test]
fn free_checker_reports_early_free_and_passes_frees_on() {
    let f = mapped(false);
    let shared = SharedTlbModel::new();
    shared.borrow_mut().access(va(VA), ONE, &f);
    let mut mem = FreeChecker::new(FakeMemory { freed: vec![] }, shared.clone());
    f.write_page(TABLE, VA, None);

    // Freed before the flush: reported.
    mem.release_mapped(VirtAddr::new(0x1000), PhysAddr::new(FRAME_A), 4096);
    assert_eq!(mem.violations().len(), 1);
    // The right order: flush, then free. Nothing new.
    let mut backend = shared.clone();
    backend.prepare();
    backend.invalidate_va(va(VA), ONE);
    backend.complete();
    mem.free_frames(PhysAddr::new(FRAME_A), 1);
    assert_eq!(mem.violations().len(), 1);
    assert_eq!(mem.inner().freed, vec![(FRAME_A, 1), (FRAME_A, 1)]);
    assert_eq!(shared.counters().va, 1);
}

#[test]
fn conflicting_entries_are_flagged_and_break_before_make_has_none() {
    // A page rewritten to another frame with the old entry still cached: a walk in
    // flight loads the new one next to it.
    let f = mapped(false);
    let mut tlb = TlbModel::new();
    tlb.access(va(VA), ONE, &f);
    f.write_page(TABLE, VA, Some((FRAME_B, false)));
    let found = tlb.access_in_flight(&[va(VA)], ONE, &f);
    assert_eq!(found[0].map(|l| l.pa.as_u64()), Some(FRAME_B));
    assert_eq!(tlb.conflicts().len(), 1);
    let c = tlb.conflicts()[0];
    assert_eq!(
        (c.cached.leaf.pa.as_u64(), c.loaded.leaf.pa.as_u64()),
        (FRAME_A, FRAME_B)
    );
    assert!(std::format!("{c}").contains("TLB conflict"));

    // Break-before-make: clear, invalidate and complete, then write: nothing to conflict.
    let f = mapped(false);
    let mut tlb = TlbModel::new();
    tlb.access(va(VA), ONE, &f);
    f.write_page(TABLE, VA, None);
    assert_eq!(tlb.access_in_flight(&[va(VA)], ONE, &f), std::vec![None]);
    batch(&mut tlb, |t| t.invalidate_va(va(VA), ONE));
    f.write_page(TABLE, VA, Some((FRAME_B, false)));
    tlb.access_in_flight(&[va(VA)], ONE, &f);
    assert!(tlb.conflicts().is_empty(), "{:?}", tlb.conflicts());

    // Another ASID's entry for the same VA is no conflict (no access hits both).
    tlb.access_in_flight(&[va(VA)], TWO, &mapped(false));
    assert!(tlb.conflicts().is_empty());
}

#[test]
fn a_section_split_into_pages_conflicts_while_the_section_is_cached() {
    // A section cached, then replaced by a table of pages (same frames, so the output
    // agrees but the size does not): a conflict until the section's entry is gone.
    let mut f = Fake::default();
    let base = VA & !0xf_ffff;
    f.section(base, FRAME_A, false);
    let mut tlb = TlbModel::new();
    tlb.access(va(base), ONE, &f);
    f.link_table(base, TABLE);
    f.write_page(TABLE, base, Some((FRAME_A, false)));
    tlb.access_in_flight(&[va(base)], ONE, &f);
    assert_eq!(tlb.conflicts().len(), 1, "size change not flagged");
    // Identical fills are deduplicated, not conflicts.
    tlb.access_in_flight(&[va(base)], ONE, &f);
    assert_eq!(tlb.conflicts().len(), 1);
    assert_eq!(tlb.stats().walks_in_flight, 2);
}

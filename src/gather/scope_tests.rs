//! Properties of the gather's scopes and of its running report (issue 15):
//!
//! - in [`Scope::Kernel`], what a walker clears or changes is invalidated for *every* ASID,
//!   global or not: a non-global kernel leaf (or table) may be cached under whichever ASID
//!   was current when it was used, so a by-VA invalidate tagged with one ASID would leave
//!   the others' entries reachable after the frame is freed;
//! - [`MmuGather::report`] of an unfinished gather tells what it has done so far, and the
//!   final report only adds to it.
//!
//! The backend here is a tiny TLB that holds an entry per (page, ASID) and drops entries
//! only when a covering invalidate completes; the memory checks every free against it.

use std::cell::RefCell;
use std::format;
use std::rc::Rc;
use std::string::String;
use std::vec::Vec;

use super::*;
use crate::sink::{ChangedLeaf, ClearedLeaf, MapSize};
use crate::tlb::TlbCounters;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    va: u32,
    asid: u8,
    global: bool,
    /// Leads to this frame (0: a permission entry, nothing to free).
    pa: u64,
    doomed: bool,
}

#[derive(Default)]
struct World {
    entries: Vec<Entry>,
    errors: Vec<String>,
    freed: Vec<u64>,
    counters: TlbCounters,
}

#[derive(Clone, Default)]
struct Shared(Rc<RefCell<World>>);

impl Shared {
    /// The CPU used the page at `va` (reaching `pa`) under each of `asids`.
    fn cached(&self, va: u32, pa: u64, global: bool, asids: &[u8]) {
        let mut w = self.0.borrow_mut();
        for &asid in asids {
            w.entries.push(Entry {
                va,
                asid,
                global,
                pa,
                doomed: false,
            });
        }
    }
    fn doom(&self, f: impl Fn(&Entry) -> bool) {
        for e in &mut self.0.borrow_mut().entries {
            if f(e) {
                e.doomed = true;
            }
        }
    }
    fn reachable(&self, va: u32) -> Vec<u8> {
        let w = self.0.borrow();
        w.entries
            .iter()
            .filter(|e| e.va == va)
            .map(|e| e.asid)
            .collect()
    }
}

impl TlbBackend for Shared {
    fn prepare(&mut self) {
        self.0.borrow_mut().counters.prepares += 1;
    }
    fn invalidate_va(&mut self, va: VirtAddr, asid: Asid) {
        self.0.borrow_mut().counters.va += 1;
        let page = va.as_u64() as u32 & !0xfff;
        self.doom(|e| e.va == page && (e.global || e.asid == asid.0));
    }
    fn invalidate_va_all_asids(&mut self, va: VirtAddr) {
        self.0.borrow_mut().counters.va_all_asids += 1;
        let page = va.as_u64() as u32 & !0xfff;
        self.doom(|e| e.va == page);
    }
    fn invalidate_asid(&mut self, asid: Asid) {
        self.0.borrow_mut().counters.asid += 1;
        self.doom(|e| !e.global && e.asid == asid.0);
    }
    fn invalidate_all(&mut self) {
        self.0.borrow_mut().counters.all += 1;
        self.doom(|_| true);
    }
    fn invalidate_branch_predictor(&mut self) {}
    fn complete(&mut self) {
        let mut w = self.0.borrow_mut();
        w.counters.completions += 1;
        w.entries.retain(|e| !e.doomed);
    }
    fn counters(&self) -> TlbCounters {
        self.0.borrow().counters
    }
}

// SAFETY: never lends a frame (allocation fails), so `phys_to_virt` is never used.
unsafe impl Memory for Shared {
    fn allocate_frames(&mut self, _: usize, _: usize) -> Option<PhysAddr> {
        None
    }
    fn free_frames(&mut self, pa: PhysAddr, _: usize) {
        let mut w = self.0.borrow_mut();
        let pa = pa.as_u64();
        if let Some(e) = w.entries.iter().find(|e| e.pa == pa).copied() {
            w.errors
                .push(format!("{pa:#x} freed while reachable via {e:?}"));
        }
        w.freed.push(pa);
    }
    fn phys_to_virt(&self, _: PhysAddr) -> core::ptr::NonNull<u8> {
        unreachable!("no frame is ever lent")
    }
}

const ASIDS: [u8; 4] = [1, 7, 42, 255];

#[test]
fn kernel_scope_invalidates_a_non_global_leaf_for_every_asid() {
    let w = Shared::default();
    let f = InFlight::new();
    let va = 0xc040_3000;
    w.cached(va, 0x8000_0000, false, &ASIDS);
    let mut g = MmuGather::new(Scope::Kernel, w.clone(), w.clone(), &f);
    g.leaf_cleared(ClearedLeaf {
        va: VirtAddr::new(va),
        size: MapSize::Page4K,
        pa: PhysAddr::new(0x8000_0000),
        global: false,
        executable: false,
    });
    let rep = g.finish();
    assert_eq!(w.reachable(va), Vec::<u8>::new(), "entries left behind");
    assert_eq!(w.0.borrow().errors, Vec::<String>::new());
    assert_eq!(w.0.borrow().freed, [0x8000_0000]);
    assert_eq!((rep.invalidates.va, rep.invalidates.va_all_asids), (0, 1));
}

#[test]
fn kernel_scope_invalidates_a_changed_non_global_leaf_for_every_asid() {
    let w = Shared::default();
    let f = InFlight::new();
    let va = 0xc080_0000;
    w.cached(va, 0, false, &ASIDS);
    let mut g = MmuGather::new(Scope::Kernel, w.clone(), w.clone(), &f);
    g.leaf_changed(ChangedLeaf {
        va: VirtAddr::new(va),
        size: MapSize::Page4K,
        global: false,
        executable: false,
    });
    let _ = g.finish();
    assert_eq!(
        w.reachable(va),
        Vec::<u8>::new(),
        "old permissions still cached"
    );
}

#[test]
fn kernel_scope_invalidates_a_non_global_table_for_every_asid() {
    let w = Shared::default();
    let f = InFlight::new();
    // A walk-cache entry for the table at 0xc100_0000, under several ASIDs.
    let va = 0xc100_0000;
    w.cached(va, 0x8100_0000, false, &ASIDS);
    let mut g = MmuGather::new(Scope::Kernel, w.clone(), w.clone(), &f);
    g.table_unlinked(VirtAddr::new(va), 1 << 20, false);
    g.table_memory_freed(PhysAddr::new(0x8100_0000), 1);
    let _ = g.finish();
    assert_eq!(
        w.reachable(va),
        Vec::<u8>::new(),
        "walk-cache entries left behind"
    );
    assert_eq!(w.0.borrow().errors, Vec::<String>::new());
}

#[test]
fn an_asid_scope_invalidates_only_its_own_asid() {
    // The contrast (and the teeth of the tiny TLB): a user space's non-global leaf is
    // invalidated for its ASID only, the others' entries are not its business.
    let w = Shared::default();
    let f = InFlight::new();
    let va = 0x0040_3000;
    w.cached(va, 0, false, &ASIDS);
    let mut g = MmuGather::new(Scope::Asid(Asid(7)), w.clone(), w.clone(), &f);
    g.leaf_changed(ChangedLeaf {
        va: VirtAddr::new(va),
        size: MapSize::Page4K,
        global: false,
        executable: false,
    });
    let _ = g.finish();
    assert_eq!(w.reachable(va), [1, 42, 255]);
}

#[test]
fn report_of_an_unfinished_gather_tells_what_was_done_so_far() {
    let w = Shared::default();
    let f = InFlight::new();
    let mut g = MmuGather::new(Scope::Asid(Asid(3)), w.clone(), w.clone(), &f);
    assert_eq!(g.report(), FlushReport::default());
    for i in 0..3u32 {
        g.leaf_cleared(ClearedLeaf {
            va: VirtAddr::new(0x0010_0000 + i * 0x2000),
            size: MapSize::Page4K,
            pa: PhysAddr::new(0x9000_0000 + u64::from(i) * 0x2000),
            global: false,
            executable: false,
        });
    }
    let before = g.report();
    assert_eq!(before.leaves_cleared, 3);
    assert_eq!((before.flushes, before.leaves_released), (0, 0));
    g.flush();
    let mid = g.report();
    assert_eq!(mid.leaves_cleared, 3);
    assert_eq!((mid.flushes, mid.completions), (1, 1));
    assert_eq!(mid.invalidates.va, 3);
    assert_eq!(mid.leaves_released, 3);
    assert_eq!(mid.bytes_released, 3 * 4096);
    g.leaf_changed(ChangedLeaf {
        va: VirtAddr::new(0x0020_0000),
        size: MapSize::Page4K,
        global: false,
        executable: false,
    });
    assert_eq!(g.report().leaves_changed, 1);
    let last = g.finish();
    // The final report only adds to what the unfinished one said.
    assert_eq!(last.leaves_cleared, mid.leaves_cleared);
    assert_eq!(last.flushes, mid.flushes + 1);
    assert_eq!(last.invalidates.va, mid.invalidates.va + 1);
}

//! Host unit tests of the gather against a recording backend and memory that share one
//! small "world": a list of stale TLB / walk-cache entries that only a covering invalidate
//! *followed by a completion* removes, and the frames outstanding. Every free is checked
//! against it at the moment it happens, so "freed before the flush completed" and "freed
//! without a covering invalidate" are both caught (the teeth tests below break the backend
//! and show it).

use std::boxed::Box;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::format;
use std::rc::Rc;
use std::string::String;
use std::vec::Vec;

use super::*;
use crate::addr::PAGE_SIZE;
use crate::sink::MapSize;
use crate::tlb::TlbCounters;

const MIB: u64 = 1 << 20;

/// Something a CPU may still reach: a leaf translation or a walk-cache entry for a table.
#[derive(Clone, Debug)]
struct Stale {
    start: u64,
    end: u64,
    /// Matches every ASID.
    global: bool,
    asid: u8,
    /// The frame it leads to (leaf frame, or the table's frame).
    pa: u64,
    /// An invalidate that covers it was issued; it dies at the next completion.
    doomed: bool,
}

#[derive(Default)]
struct World {
    stale: Vec<Stale>,
    /// Frames handed to the gather (by the test) and not yet back: pa -> frames.
    outstanding: BTreeMap<u64, usize>,
    /// Batch frames lent to the gather.
    batch: BTreeMap<u64, Box<[u8; 4096]>>,
    next_batch_pa: u64,
    /// Batch-frame allocations left before failures start (None: never fail).
    batch_allocs_left: Option<usize>,
    counters: TlbCounters,
    in_batch: bool,
    violations: Vec<String>,
    /// Order of interesting events, for sequence checks.
    log: Vec<&'static str>,
    // Bugs to switch on (teeth).
    skip_va: bool,
    skip_complete: bool,
}

impl World {
    fn kill(&mut self, f: impl Fn(&Stale) -> bool) {
        for s in &mut self.stale {
            if f(s) {
                s.doomed = true;
            }
        }
    }
    fn check_free(&mut self, pa: u64, what: &str) {
        if let Some(s) = self.stale.iter().find(|s| s.pa == pa) {
            let msg = format!("{what} {pa:#x} freed while still reachable via {s:?}");
            self.violations.push(msg);
        }
        if !self.outstanding.contains_key(&pa) {
            self.violations.push(format!(
                "{what} {pa:#x} freed but not outstanding (double free?)"
            ));
        }
    }
}

type Shared = Rc<RefCell<World>>;

struct Tlb(Shared);
struct Mem(Shared);

impl TlbBackend for Tlb {
    fn prepare(&mut self) {
        let mut w = self.0.borrow_mut();
        if w.in_batch {
            w.violations.push("prepare inside a batch".into());
        }
        w.in_batch = true;
        w.counters.prepares += 1;
        w.log.push("prepare");
    }
    fn invalidate_va(&mut self, va: VirtAddr, asid: Asid) {
        let mut w = self.0.borrow_mut();
        if !w.in_batch {
            w.violations.push("invalidate outside a batch".into());
        }
        w.counters.va += 1;
        w.log.push("va");
        if w.skip_va {
            return;
        }
        let a = va.as_u64();
        w.kill(|s| a >= s.start && a < s.end && (s.global || s.asid == asid.0));
    }
    fn invalidate_va_all_asids(&mut self, va: VirtAddr) {
        let mut w = self.0.borrow_mut();
        w.counters.va_all_asids += 1;
        w.log.push("va_all");
        let a = va.as_u64();
        w.kill(|s| a >= s.start && a < s.end);
    }
    fn invalidate_asid(&mut self, asid: Asid) {
        let mut w = self.0.borrow_mut();
        w.counters.asid += 1;
        w.log.push("asid");
        w.kill(|s| !s.global && s.asid == asid.0);
    }
    fn invalidate_all(&mut self) {
        let mut w = self.0.borrow_mut();
        w.counters.all += 1;
        w.log.push("all");
        w.kill(|_| true);
    }
    fn invalidate_branch_predictor(&mut self) {
        let mut w = self.0.borrow_mut();
        w.counters.branch_predictor += 1;
        w.log.push("bp");
    }
    fn complete(&mut self) {
        let mut w = self.0.borrow_mut();
        if !w.in_batch {
            w.violations.push("complete without prepare".into());
        }
        w.in_batch = false;
        w.counters.completions += 1;
        w.log.push("complete");
        if !w.skip_complete {
            w.stale.retain(|s| !s.doomed);
        }
    }
    fn counters(&self) -> TlbCounters {
        self.0.borrow().counters
    }
}

// SAFETY: test memory; `phys_to_virt` is only used for lent batch frames, which are heap
// buffers owned by the world for as long as they are lent.
unsafe impl Memory for Mem {
    fn allocate_frames(&mut self, count: usize, align: usize) -> Option<PhysAddr> {
        let mut w = self.0.borrow_mut();
        assert_eq!(
            (count, align),
            (1, 4096),
            "the gather only borrows single frames"
        );
        if let Some(left) = &mut w.batch_allocs_left {
            if *left == 0 {
                return None;
            }
            *left -= 1;
        }
        let pa = 0xF000_0000 + w.next_batch_pa;
        w.next_batch_pa += 4096;
        // Poison: the gather must not rely on a zeroed frame.
        w.batch.insert(pa, Box::new([0xa5; 4096]));
        w.log.push("alloc");
        Some(PhysAddr::new(pa))
    }
    fn free_frames(&mut self, pa: PhysAddr, count: usize) {
        let mut w = self.0.borrow_mut();
        let pa = pa.as_u64();
        if w.batch.remove(&pa).is_some() {
            if count != 1 {
                w.violations
                    .push(format!("batch frame {pa:#x} freed as {count}"));
            }
            w.log.push("free_batch");
            return;
        }
        w.check_free(pa, "table");
        match w.outstanding.remove(&pa) {
            Some(n) if n != count => w
                .violations
                .push(format!("table {pa:#x}: {count} frames freed, {n} given")),
            _ => {}
        }
        w.log.push("free_table");
    }
    fn phys_to_virt(&self, pa: PhysAddr) -> core::ptr::NonNull<u8> {
        let w = self.0.borrow();
        let frame = w
            .batch
            .get(&pa.as_u64())
            .expect("phys_to_virt only for lent batch frames");
        core::ptr::NonNull::new(frame.as_ptr() as *mut u8).unwrap()
    }
    fn release_mapped(&mut self, _va: VirtAddr, pa: PhysAddr, bytes: usize) {
        let mut w = self.0.borrow_mut();
        let pa = pa.as_u64();
        w.check_free(pa, "page");
        match w.outstanding.remove(&pa) {
            Some(n) if n * 4096 != bytes => w.violations.push(format!(
                "mapping {pa:#x}: {bytes} bytes freed, {n} frames given"
            )),
            _ => {}
        }
        w.log.push("free");
    }
}

/// A test harness: the world, and helpers that play the walker (they record what the
/// hardware could still reach, then report to the sink).
struct Rig {
    w: Shared,
    next_pa: u64,
    /// Hand out physically consecutive frames (runs) instead of leaving gaps.
    contiguous: bool,
}

impl Rig {
    fn new() -> Self {
        Self {
            w: Rc::new(RefCell::new(World::default())),
            next_pa: 0x4000_0000,
            contiguous: false,
        }
    }
    fn tlb(&self) -> Tlb {
        Tlb(self.w.clone())
    }
    fn mem(&self) -> Mem {
        Mem(self.w.clone())
    }
    fn gather<'a>(&self, scope: Scope, f: &'a InFlight) -> MmuGather<'a, Tlb, Mem> {
        MmuGather::new(scope, self.tlb(), self.mem(), f)
    }
    fn gather_cfg<'a>(
        &self,
        scope: Scope,
        f: &'a InFlight,
        cfg: GatherConfig,
    ) -> MmuGather<'a, Tlb, Mem> {
        MmuGather::with_config(scope, self.tlb(), self.mem(), f, cfg)
    }
    /// A new frame range, never physically next to the previous one (so each leaf is its
    /// own batch entry, as with scattered real memory; see `contiguous_pa` for runs).
    fn fresh_pa(&mut self, bytes: u64) -> u64 {
        let pa = self.next_pa.div_ceil(bytes) * bytes;
        self.next_pa = pa + bytes + if self.contiguous { 0 } else { 4096 };
        pa
    }
    /// Makes `[start, end)` reachable (tagged `asid`, or global) through the `frames`
    /// frames at `pa`, which the test hands to the gather.
    fn reachable(&self, (start, end): (u64, u64), global: bool, asid: u8, pa: u64, frames: usize) {
        let mut w = self.w.borrow_mut();
        w.stale.push(Stale {
            start,
            end,
            global,
            asid,
            pa,
            doomed: false,
        });
        w.outstanding.insert(pa, frames);
    }
    /// Clears a leaf (the TLB may hold it, tagged `asid`) and reports it.
    fn leaf(
        &mut self,
        g: &mut impl UnmapSink,
        va: u32,
        size: MapSize,
        asid: u8,
        flags: (bool, bool),
    ) {
        let (global, executable) = flags;
        let pa = self.fresh_pa(size.bytes());
        let frames = (size.bytes() / 4096) as usize;
        self.reachable(
            (va as u64, va as u64 + size.bytes()),
            global,
            asid,
            pa,
            frames,
        );
        g.leaf_cleared(ClearedLeaf {
            va: VirtAddr::new(va),
            size,
            pa: PhysAddr::new(pa),
            global,
            executable,
        });
    }
    fn page(&mut self, g: &mut impl UnmapSink, va: u32, asid: u8) {
        self.leaf(g, va, MapSize::Page4K, asid, (false, false));
    }
    /// Unlinks tables for the given 1 MiB regions, all living in one fresh table frame,
    /// then frees that frame.
    fn tables(&mut self, g: &mut impl UnmapSink, regions: &[u32], asid: u8, global: bool) -> u64 {
        let pa = self.fresh_pa(4096);
        let mut w = self.w.borrow_mut();
        for &r in regions {
            w.stale.push(Stale {
                start: r as u64,
                end: r as u64 + MIB,
                global,
                asid,
                pa,
                doomed: false,
            });
        }
        w.outstanding.insert(pa, 1);
        drop(w);
        for &r in regions {
            g.table_unlinked(VirtAddr::new(r), MIB, global);
        }
        g.table_memory_freed(PhysAddr::new(pa), 1);
        pa
    }
    fn violations(&self) -> Vec<String> {
        self.w.borrow().violations.clone()
    }
    /// Everything given back exactly once, batch frames returned, nothing reachable.
    fn assert_clean(&self) {
        let w = self.w.borrow();
        assert_eq!(w.violations, Vec::<String>::new());
        assert!(w.outstanding.is_empty(), "not freed: {:?}", w.outstanding);
        assert!(w.batch.is_empty(), "batch frames kept: {}", w.batch.len());
        assert!(w.stale.is_empty(), "still reachable: {:?}", w.stale);
        assert!(!w.in_batch, "batch left open");
    }
    fn log(&self) -> Vec<&'static str> {
        self.w.borrow().log.clone()
    }
}

const A: u8 = 7;

/// Batch words a single leaf takes (its frame and its VA).
const LEAF_WORDS: usize = 2;
/// Single leaves one borrowed batch frame holds: the frame is 1024 words, a 4-word header
/// and its entries. Written from the layout, not from `ENTRIES_PER_FRAME`, so a wrong
/// capacity shows as a wrong count of borrowed frames.
const LEAVES_PER_FRAME: usize = (PAGE_SIZE as usize / 4 - 4) / LEAF_WORDS;
/// Items a gather holds before it needs a batch frame: the open run and the on-stack batch.
const HELD: usize = LOCAL_BATCH / LEAF_WORDS + 1;

#[test]
fn size_budget() {
    let host = core::mem::size_of::<MmuGather<'static, &mut Tlb, &mut Mem>>();
    std::println!("MmuGather: {host} bytes on this host, state {GATHER_STATE_BYTES}");
    assert!(host < 640, "gather is {host} bytes");
    if cfg!(target_pointer_width = "64") {
        assert_eq!(host, 592, "update the Size section of the module docs");
    }
    assert_eq!(GATHER_STATE_BYTES, 544);
}

#[test]
fn one_page_one_invalidate_then_free() {
    let mut r = Rig::new();
    let f = InFlight::new();
    let mut g = r.gather(Scope::Asid(Asid(A)), &f);
    r.page(&mut g, 0x0040_0000, A);
    assert_eq!(g.pending_invalidates(), Some(1));
    assert_eq!(g.pending_frames(), 1);
    let rep = g.finish();
    assert_eq!(r.log(), ["prepare", "va", "complete", "free"]);
    assert_eq!(rep.invalidates.va, 1);
    assert_eq!(rep.invalidates.tlb_ops(), 1);
    assert_eq!((rep.prepares, rep.completions, rep.flushes), (1, 1, 1));
    assert_eq!((rep.leaves_released, rep.bytes_released), (1, 4096));
    assert_eq!(rep.fallback, None);
    assert_eq!(f.current(), 0);
    r.assert_clean();
}

#[test]
fn empty_gather_issues_nothing() {
    let r = Rig::new();
    let f = InFlight::new();
    let rep = r.gather(Scope::Asid(Asid(A)), &f).finish();
    assert_eq!(rep, FlushReport::default());
    assert!(r.log().is_empty());
}

#[test]
fn one_invalidate_per_mapping_whatever_its_size() {
    let mut r = Rig::new();
    let f = InFlight::new();
    let mut g = r.gather(Scope::Asid(Asid(A)), &f);
    r.leaf(&mut g, 0x0001_0000, MapSize::Large64K, A, (false, false));
    r.leaf(&mut g, 0x0010_0000, MapSize::Section1M, A, (false, false));
    r.leaf(&mut g, 0x0100_0000, MapSize::Super16M, A, (false, false));
    r.page(&mut g, 0x0200_0000, A);
    let rep = g.finish();
    assert_eq!(rep.invalidates.va, 4);
    assert_eq!(rep.bytes_released, (64 << 10) + MIB + 16 * MIB + 4096);
    r.assert_clean();
}

#[test]
fn sparse_unmap_is_precise() {
    // 8 pages scattered over 64 MiB: 8 invalidates (Linux ARM32: one per 4 KiB of the
    // tracked range).
    let mut r = Rig::new();
    let f = InFlight::new();
    let mut g = r.gather(Scope::Asid(Asid(A)), &f);
    let mut est = LinuxArm32Estimate::new(false);
    let base = 0x1000_0000u32;
    for i in 0..8u32 {
        let va = base + i * (9 << 20) + if i == 7 { (1 << 20) - 4096 } else { 0x3000 };
        let mut tee = Tee::new(&mut g, &mut est);
        r.page(&mut tee, va.min(base + (64 << 20) - 4096), A);
    }
    let rep = g.finish();
    assert_eq!(rep.invalidates.tlb_ops(), 8);
    assert!(est.finish() > 14_000, "Linux estimate {}", est.ops_so_far());
    r.assert_clean();
}

#[test]
fn global_leaves_use_all_asid_invalidates() {
    let mut r = Rig::new();
    let f = InFlight::new();
    let mut g = r.gather(Scope::Asid(Asid(A)), &f);
    r.leaf(&mut g, 0xc000_0000, MapSize::Page4K, 0, (true, false));
    r.page(&mut g, 0x0000_8000, A);
    let rep = g.finish();
    assert_eq!((rep.invalidates.va, rep.invalidates.va_all_asids), (1, 1));
    r.assert_clean();
}

#[test]
fn kernel_space_uses_all_asid_ops_and_falls_back_to_all() {
    let mut r = Rig::new();
    let f = InFlight::new();
    let mut g = r.gather(Scope::Kernel, &f);
    r.leaf(&mut g, 0xc010_0000, MapSize::Page4K, 3, (true, false));
    let rep = g.finish();
    assert_eq!(rep.invalidates.va_all_asids, 1);
    r.assert_clean();

    let cfg = GatherConfig {
        max_invalidates: 2,
        ..GatherConfig::DEFAULT
    };
    let mut g = r.gather_cfg(Scope::Kernel, &f, cfg);
    for i in 0..3 {
        r.leaf(
            &mut g,
            0xc000_0000 + i * 4096,
            MapSize::Page4K,
            0,
            (true, false),
        );
    }
    let rep = g.finish();
    assert_eq!(rep.invalidates.all, 1);
    assert_eq!(rep.invalidates.tlb_ops(), 1);
    assert_eq!(rep.fallback, Some(Fallback::Threshold));
    r.assert_clean();
}

#[test]
fn threshold_falls_back_to_one_asid_op() {
    for limit in [0usize, 1, 5, 64] {
        let mut r = Rig::new();
        let f = InFlight::new();
        let cfg = GatherConfig {
            max_invalidates: limit,
            ..GatherConfig::DEFAULT
        };
        let mut g = r.gather_cfg(Scope::Asid(Asid(A)), &f, cfg);
        for i in 0..limit as u32 {
            r.page(&mut g, i << 12, A);
        }
        assert_eq!(g.pending_invalidates(), Some(limit));
        r.page(&mut g, 0x0800_0000, A);
        assert_eq!(g.pending_invalidates(), None);
        let rep = g.finish();
        assert_eq!(rep.invalidates.asid, 1, "limit {limit}");
        assert_eq!(rep.invalidates.tlb_ops(), 1);
        assert_eq!(rep.fallback, Some(Fallback::Threshold));
        r.assert_clean();
    }
}

#[test]
fn threshold_is_clamped_to_capacity() {
    let mut r = Rig::new();
    let f = InFlight::new();
    let cfg = GatherConfig {
        max_invalidates: 1000,
        ..GatherConfig::DEFAULT
    };
    let mut g = r.gather_cfg(Scope::Asid(Asid(A)), &f, cfg);
    for i in 0..MAX_PENDING as u32 + 1 {
        r.page(&mut g, i << 12, A);
    }
    let rep = g.finish();
    assert_eq!(rep.invalidates.tlb_ops(), 1);
    r.assert_clean();
}

#[test]
fn global_entry_past_threshold_needs_invalidate_all() {
    // TLBIASID leaves global entries alone, so a fallback after a global leaf must be
    // TLBIALL; the world would flag the stale global entry otherwise.
    let mut r = Rig::new();
    let f = InFlight::new();
    let cfg = GatherConfig {
        max_invalidates: 1,
        ..GatherConfig::DEFAULT
    };
    let mut g = r.gather_cfg(Scope::Asid(Asid(A)), &f, cfg);
    r.leaf(&mut g, 0xc000_0000, MapSize::Section1M, 0, (true, false));
    r.page(&mut g, 0x1000, A);
    let rep = g.finish();
    assert_eq!((rep.invalidates.all, rep.invalidates.asid), (1, 0));
    r.assert_clean();
}

#[test]
fn teardown_is_one_asid_op() {
    for trust in [true, false] {
        let mut r = Rig::new();
        let f = InFlight::new();
        let cfg = GatherConfig {
            asid_flush_drops_walk_cache: trust,
            ..GatherConfig::DEFAULT
        };
        let mut g = r.gather_cfg(Scope::Teardown(Asid(A)), &f, cfg);
        for i in 0..300u32 {
            r.page(&mut g, 0x0010_0000 + (i << 12), A);
        }
        r.tables(&mut g, &[0x0010_0000, 0x0020_0000], A, false);
        assert_eq!(g.pending_invalidates(), None);
        let rep = g.finish();
        // With tables freed, TLBIASID unless `asid_flush_drops_walk_cache` is off.
        assert_eq!(
            (rep.invalidates.asid, rep.invalidates.all),
            if trust { (1, 0) } else { (0, 1) }
        );
        assert_eq!(rep.invalidates.tlb_ops(), 1);
        assert_eq!(rep.fallback, Some(Fallback::Teardown));
        assert_eq!(rep.completions, 1);
        r.assert_clean();
    }
    // Without tables, TLBIASID either way.
    let mut r = Rig::new();
    let f = InFlight::new();
    let mut g = r.gather(Scope::Teardown(Asid(A)), &f);
    r.page(&mut g, 0x1000, A);
    assert_eq!(g.finish().invalidates.asid, 1);
    r.assert_clean();
}

#[test]
fn executable_leaf_invalidates_branch_predictor() {
    let mut r = Rig::new();
    let f = InFlight::new();
    let mut g = r.gather(Scope::Asid(Asid(A)), &f);
    r.leaf(&mut g, 0x8000, MapSize::Page4K, A, (false, true));
    let rep = g.finish();
    assert_eq!(rep.invalidates.branch_predictor, 1);
    assert_eq!(r.log(), ["prepare", "va", "bp", "complete", "free"]);
    r.assert_clean();

    let mut g = r.gather(Scope::Asid(Asid(A)), &f);
    r.page(&mut g, 0x8000, A);
    assert_eq!(g.finish().invalidates.branch_predictor, 0);
}

#[test]
fn freed_tables_cost_one_op_per_region_unless_a_leaf_covers_it() {
    let mut r = Rig::new();
    let f = InFlight::new();
    let mut g = r.gather(Scope::Asid(Asid(A)), &f);
    // A leaf in region 1; tables for regions 0..4 in one frame (packed L2 tables).
    r.page(&mut g, 0x0010_5000, A);
    r.tables(
        &mut g,
        &[0x0000_0000, 0x0010_0000, 0x0020_0000, 0x0030_0000],
        A,
        false,
    );
    let rep = g.finish();
    assert_eq!(rep.tables_unlinked, 4);
    // Tables of an ASID space are invalidated by VA and its ASID; region 1's leaf op
    // already covers its table (not widened, no second op).
    assert_eq!(rep.invalidates.va, 1 + 3, "region 1 covered by the leaf");
    assert_eq!(rep.invalidates.va_all_asids, 0);
    assert_eq!(rep.table_frames_freed, 1);
    r.assert_clean();
}

/// Unlinks the 1 MiB table at `va` (reported `global` or not), whose walk-cache entry the
/// world tags with `asid` as a *non-global* entry: only an op for that ASID, or for all
/// ASIDs, removes it (a global table may be walked under any ASID, so the world's `global`
/// flag, which every by-VA op would match, would not tell an all-ASID op from a narrow one).
fn table_walked_under(r: &mut Rig, g: &mut impl UnmapSink, va: u32, asid: u8, global: bool) {
    let pa = r.fresh_pa(4096);
    r.reachable((va as u64, va as u64 + MIB), false, asid, pa, 1);
    g.table_unlinked(VirtAddr::new(va), MIB, global);
    g.table_memory_freed(PhysAddr::new(pa), 1);
}

#[test]
fn table_ops_are_by_asid_in_an_asid_space_and_all_asid_for_global_tables_and_the_kernel() {
    // ASID space: a non-global table is invalidated by VA and the space's ASID; a pending
    // leaf op in its span covers it as it is (no second op, not widened). A global table is
    // invalidated for all ASIDs: the pending leaf op in its span is widened in place, and
    // one is added where there is none. The global tables' walk-cache entries are tagged
    // with another ASID (3): an op narrowed to the space's ASID would leave them, and the
    // world would flag the frees.
    let mut r = Rig::new();
    let f = InFlight::new();
    let mut g = r.gather(Scope::Asid(Asid(A)), &f);
    r.page(&mut g, 0x0010_5000, A);
    r.tables(&mut g, &[0x0010_0000], A, false); // covered by the leaf op
    r.tables(&mut g, &[0x0040_0000], A, false); // one TLBIMVA
    r.page(&mut g, 0xc000_0000, A);
    table_walked_under(&mut r, &mut g, 0xc000_0000, 3, true); // widens the leaf op
    table_walked_under(&mut r, &mut g, 0xc080_0000, 3, true); // one TLBIMVAA
    assert_eq!(g.pending_invalidates(), Some(4));
    let rep = g.finish();
    assert_eq!(rep.tables_unlinked, 4);
    assert_eq!((rep.invalidates.va, rep.invalidates.va_all_asids), (2, 2));
    assert_eq!(rep.invalidates.tlb_ops(), 4);
    r.assert_clean();

    // Kernel space: every table op is for all ASIDs, reported global or not.
    let mut g = r.gather(Scope::Kernel, &f);
    table_walked_under(&mut r, &mut g, 0xc010_0000, 3, false);
    table_walked_under(&mut r, &mut g, 0xc020_0000, 4, true);
    let rep = g.finish();
    assert_eq!((rep.invalidates.va, rep.invalidates.va_all_asids), (0, 2));
    r.assert_clean();
}

#[test]
fn a_batch_frame_is_filled_to_its_last_word() {
    for (n, frames) in [
        (HELD + LEAVES_PER_FRAME, 1),
        (HELD + LEAVES_PER_FRAME + 1, 2),
    ] {
        let mut r = Rig::new();
        let f = InFlight::new();
        let mut g = r.gather(Scope::Asid(Asid(A)), &f);
        for i in 0..n as u32 {
            r.page(&mut g, i << 12, A);
        }
        assert_eq!(g.batch_frames_held(), frames, "{n} leaves");
        let rep = g.finish();
        assert_eq!(rep.leaves_released as usize, n);
        assert_eq!(rep.early_flushes, 0);
    }
}

#[test]
fn big_unmap_borrows_batch_frames_and_returns_them() {
    let mut r = Rig::new();
    let f = InFlight::new();
    let mut g = r.gather(Scope::Asid(Asid(A)), &f);
    let n = HELD + 2 * LEAVES_PER_FRAME + 5;
    for i in 0..n as u32 {
        r.page(&mut g, i << 12, A);
    }
    assert_eq!(g.pending_frames(), n);
    assert_eq!(g.batch_frames_held(), 3);
    assert_eq!(r.w.borrow().batch.len(), 3);
    let rep = g.finish();
    assert_eq!(rep.batch_frames_borrowed, 3);
    assert_eq!(rep.leaves_released as usize, n);
    assert_eq!((rep.flushes, rep.completions, rep.early_flushes), (1, 1, 0));
    assert_eq!(rep.invalidates.asid, 1);
    // Frees come after the completion, and batch frames go back last.
    let log = r.log();
    let complete = log.iter().position(|&e| e == "complete").unwrap();
    let first_free = log.iter().position(|&e| e == "free").unwrap();
    let last_free = log.iter().rposition(|&e| e == "free").unwrap();
    let first_batch_free = log.iter().position(|&e| e == "free_batch").unwrap();
    assert!(complete < first_free && last_free < first_batch_free);
    r.assert_clean();
}

#[test]
fn no_batch_frame_means_flush_now_and_continue() {
    let mut r = Rig::new();
    r.w.borrow_mut().batch_allocs_left = Some(0);
    let f = InFlight::new();
    let mut g = r.gather(Scope::Asid(Asid(A)), &f);
    let n = 3 * HELD + 2;
    for i in 0..n as u32 {
        r.page(&mut g, i << 12, A);
        // Nothing is ever freed before its invalidate completed (checked by the world).
    }
    let rep = g.finish();
    assert_eq!(rep.early_flushes, 3);
    assert_eq!(rep.batch_alloc_failures, 3);
    assert_eq!(rep.flushes, 4, "3 early + the final one");
    assert_eq!(rep.completions, rep.flushes);
    assert_eq!(rep.leaves_released as usize, n);
    assert_eq!(rep.invalidates.va as usize, n, "each page invalidated once");
    r.assert_clean();
}

#[test]
fn batch_frame_limit_forces_early_flush_and_frames_are_reused() {
    let mut r = Rig::new();
    let f = InFlight::new();
    let cfg = GatherConfig {
        max_batch_frames: 2,
        ..GatherConfig::DEFAULT
    };
    let mut g = r.gather_cfg(Scope::Asid(Asid(A)), &f, cfg);
    let cap = HELD + 2 * LEAVES_PER_FRAME;
    for i in 0..(2 * cap + 3) as u32 {
        r.page(&mut g, i << 12, A);
    }
    let rep = g.finish();
    assert_eq!(rep.early_flushes, 2);
    assert_eq!(rep.batch_frames_borrowed, 2, "kept across early flushes");
    assert_eq!(rep.flushes, 3);
    r.assert_clean();
}

#[test]
fn physically_consecutive_leaves_take_one_entry_and_are_released_one_by_one() {
    // 4,000 pages whose frames follow each other: one run, no batch frame, no early flush,
    // and still one `release_mapped` per page (checked by the world) after the one flush.
    let mut r = Rig::new();
    r.contiguous = true;
    r.w.borrow_mut().batch_allocs_left = Some(0);
    let f = InFlight::new();
    let mut g = r.gather(Scope::Asid(Asid(A)), &f);
    for i in 0..4000u32 {
        r.page(&mut g, 0x1000_0000 + (i << 12), A);
    }
    assert_eq!(g.pending_frames(), 1, "one run");
    // A gap, another size, then table memory: each closes the run or adds an entry.
    r.contiguous = false;
    r.next_pa += 4096;
    r.page(&mut g, 0x2000_0000, A);
    r.leaf(&mut g, 0x3000_0000, MapSize::Section1M, A, (false, false));
    r.tables(&mut g, &[0x1000_0000], A, false);
    assert_eq!(g.pending_frames(), 4);
    let rep = g.finish();
    assert_eq!((rep.flushes, rep.early_flushes), (1, 0));
    assert_eq!(rep.batch_frames_borrowed, 0);
    assert_eq!(rep.leaves_released, 4002);
    assert_eq!(rep.bytes_released, 4001 * 4096 + MIB);
    let frees = r.log().iter().filter(|&&e| e == "free").count();
    assert_eq!(frees, 4002, "one release_mapped per leaf");
    r.assert_clean();
}

#[test]
fn early_flush_after_all_recorded_frees_the_rest_without_another_barrier() {
    // The frame that triggers an early flush is batched after it; if nothing is recorded
    // afterwards, the final flush needs no TLB work (its invalidate already completed).
    let mut r = Rig::new();
    r.w.borrow_mut().batch_allocs_left = Some(0);
    let f = InFlight::new();
    let mut g = r.gather(Scope::Asid(Asid(A)), &f);
    for i in 0..=HELD as u32 {
        r.page(&mut g, i << 12, A);
    }
    assert_eq!(g.pending_invalidates(), Some(0));
    assert_eq!(g.pending_frames(), 1);
    let rep = g.finish();
    assert_eq!((rep.flushes, rep.completions), (1, 1));
    assert_eq!(rep.leaves_released as usize, HELD + 1);
    r.assert_clean();
}

#[test]
fn unpackable_items_are_flushed_and_freed_at_once() {
    let mut r = Rig::new();
    let f = InFlight::new();
    let mut g = r.gather(Scope::Asid(Asid(A)), &f);
    r.page(&mut g, 0x1000, A);
    // A mapping of a frame past 2^40 cannot be batched: flush now, then free it.
    let high = 1u64 << 40;
    r.reachable((0x2000, 0x3000), false, A, high, 1);
    g.leaf_cleared(ClearedLeaf {
        va: VirtAddr::new(0x2000),
        size: MapSize::Page4K,
        pa: PhysAddr::new(high),
        global: false,
        executable: false,
    });
    assert_eq!(g.pending_frames(), 0, "flushed and freed on the spot");
    // Table memory of 12 frames (more than one entry carries).
    let tpa = r.fresh_pa(12 * 4096);
    r.reachable((0x0100_0000, 0x0110_0000), false, A, tpa, 12);
    g.table_unlinked(VirtAddr::new(0x0100_0000), MIB, false);
    g.table_memory_freed(PhysAddr::new(tpa), 12);
    let rep = g.finish();
    assert_eq!(rep.flushes, 2);
    assert_eq!(rep.table_frames_freed, 12);
    r.assert_clean();
}

#[test]
fn explicit_flush_then_more_work() {
    let mut r = Rig::new();
    let f = InFlight::new();
    let mut g = r.gather(Scope::Asid(Asid(A)), &f);
    r.page(&mut g, 0x1000, A);
    g.flush();
    assert_eq!(r.w.borrow().outstanding.len(), 0, "freed by the flush");
    r.page(&mut g, 0x2000, A);
    let rep = g.finish();
    assert_eq!((rep.flushes, rep.invalidates.va), (2, 2));
    r.assert_clean();
}

#[test]
fn drop_flushes_then_frees_and_returns_batch_frames() {
    let mut r = Rig::new();
    let f = InFlight::new();
    {
        let mut g = r.gather(Scope::Asid(Asid(A)), &f);
        for i in 0..(LOCAL_BATCH + 10) as u32 {
            r.page(&mut g, i << 12, A);
        }
        r.tables(&mut g, &[0x0000_0000], A, false);
        assert_eq!(f.current(), 1);
        // Dropped unfinished.
    }
    assert_eq!(f.current(), 0);
    let log = r.log();
    let complete = log.iter().position(|&e| e == "complete").unwrap();
    assert!(log.iter().position(|&e| e == "free").unwrap() > complete);
    assert_eq!(r.w.borrow().counters.completions, 1);
    r.assert_clean();
}

#[test]
fn nested_gathers_fall_back_to_whole_asid() {
    let mut r = Rig::new();
    let f = InFlight::new();
    let mut g1 = r.gather(Scope::Asid(Asid(A)), &f);
    let mut g0 = r.gather(Scope::Asid(Asid(A)), &f);
    assert_eq!(f.current(), 2);
    // g1 cleared an entry that g0 then found clear: g0 records nothing for it.
    r.page(&mut g1, 0x5000, A);
    r.page(&mut g0, 0x9000, A);
    let rep0 = g0.finish();
    assert_eq!(rep0.fallback, Some(Fallback::Nested));
    assert_eq!(rep0.invalidates.asid, 1);
    // g0's flush also removed g1's stale entry, which is what g0's caller relies on.
    assert!(r.w.borrow().stale.is_empty());
    let rep1 = g1.finish();
    assert_eq!(rep1.fallback, None, "last one out uses its record");
    assert_eq!(rep1.invalidates.va, 1);
    assert_eq!(f.current(), 0);
    r.assert_clean();
}

#[test]
fn nested_fallback_covers_the_other_gathers_global_entries() {
    // g1 cleared a *global* entry (a `Layout::Whole` space); g0 finishes while g1 is in
    // flight. A TLBIASID would leave g1's global entry cached after g0's caller was told
    // the range is gone: g0 must use TLBIALL, from what g1 published in the InFlight.
    let mut r = Rig::new();
    let f = InFlight::new();
    let mut g1 = r.gather(Scope::Asid(Asid(A)), &f);
    let mut g0 = r.gather(Scope::Asid(Asid(A)), &f);
    r.leaf(&mut g1, 0x5000, MapSize::Page4K, A, (true, false));
    r.page(&mut g0, 0x9000, A);
    let rep0 = g0.finish();
    assert_eq!(rep0.fallback, Some(Fallback::Nested));
    assert_eq!((rep0.invalidates.all, rep0.invalidates.asid), (1, 0));
    let stale = r.w.borrow().stale.clone();
    assert!(
        stale.is_empty(),
        "still cached after the nested flush: {stale:?}"
    );
    let _ = g1.finish();
    r.assert_clean();
}

#[test]
fn nested_fallback_covers_the_other_gathers_unlinked_tables() {
    // The same for a table g1 unlinked (its walk-cache entry tagged with the space's
    // ASID). By default TLBIASID drops the ASID's walk-cache entries, so g0's nested
    // fallback is one TLBIASID; with `asid_flush_drops_walk_cache` off it is TLBIALL.
    // Either way g1's table entry is gone once g0 has finished, before g1 flushes.
    for trust in [true, false] {
        let mut r = Rig::new();
        let f = InFlight::new();
        let cfg = GatherConfig {
            asid_flush_drops_walk_cache: trust,
            ..GatherConfig::DEFAULT
        };
        let mut g1 = r.gather_cfg(Scope::Asid(Asid(A)), &f, cfg);
        let g0 = r.gather_cfg(Scope::Asid(Asid(A)), &f, cfg);
        r.tables(&mut g1, &[0x0010_0000], A, false);
        let rep0 = g0.finish();
        assert_eq!(rep0.fallback, Some(Fallback::Nested));
        assert_eq!(
            (rep0.invalidates.all, rep0.invalidates.asid),
            if trust { (0, 1) } else { (1, 0) },
            "trust {trust}"
        );
        let stale = r.w.borrow().stale.clone();
        assert!(
            stale.is_empty(),
            "still cached after the nested flush: {stale:?}"
        );
        let _ = g1.finish();
        r.assert_clean();
    }
}

#[test]
fn nested_fallback_covers_the_other_gathers_global_tables() {
    // g1 unlinked a table that may hold global entries (a `Layout::Whole` space): its
    // walk-cache entries match every ASID, so g0's nested fallback must be TLBIALL, from
    // what g1 published (tables and global), also when TLBIASID is trusted with the ASID's
    // own walk-cache entries.
    let mut r = Rig::new();
    let f = InFlight::new();
    let mut g1 = r.gather(Scope::Asid(Asid(A)), &f);
    let g0 = r.gather(Scope::Asid(Asid(A)), &f);
    r.tables(&mut g1, &[0x0010_0000], A, true);
    let rep0 = g0.finish();
    assert_eq!(rep0.fallback, Some(Fallback::Nested));
    assert_eq!((rep0.invalidates.all, rep0.invalidates.asid), (1, 0));
    let stale = r.w.borrow().stale.clone();
    assert!(
        stale.is_empty(),
        "still cached after the nested flush: {stale:?}"
    );
    let _ = g1.finish();
    r.assert_clean();
}

#[test]
fn nested_fallback_covers_the_other_gathers_changed_global_leaves() {
    // A protect in g1 changed a global leaf (its old permissions are cached for every
    // ASID): g0's nested fallback must be TLBIALL. A changed not-global leaf publishes
    // nothing: the fallback stays one TLBIASID.
    for global in [true, false] {
        let mut r = Rig::new();
        let f = InFlight::new();
        let mut g1 = r.gather(Scope::Asid(Asid(A)), &f);
        let mut g0 = r.gather(Scope::Asid(Asid(A)), &f);
        g1.leaf_changed(crate::sink::ChangedLeaf {
            va: VirtAddr::new(0x5000),
            size: MapSize::Page4K,
            global,
            executable: false,
        });
        r.page(&mut g0, 0x9000, A);
        let rep0 = g0.finish();
        assert_eq!(rep0.fallback, Some(Fallback::Nested));
        assert_eq!(
            (rep0.invalidates.all, rep0.invalidates.asid),
            if global { (1, 0) } else { (0, 1) },
            "global {global}"
        );
        let rep1 = g1.finish();
        assert_eq!(rep1.leaves_changed, 1);
        r.assert_clean();
    }
}

#[test]
fn a_report_reads_back_what_it_counted() {
    let mut rep = FlushReport::default();
    assert!(!rep.fell_back());
    assert_eq!(rep.invalidates.by_va(), 0);
    rep.invalidates.va = 3;
    rep.invalidates.va_all_asids = 2;
    rep.invalidates.asid = 1;
    assert_eq!(rep.invalidates.by_va(), 5);
    assert_eq!(rep.invalidates.tlb_ops(), 6);
    rep.leaves_cleared = 7;
    let quiet = format!("{rep}");
    assert!(quiet.starts_with("cleared 7 leaves"), "{quiet}");
    assert!(
        quiet.contains("invalidates: 3 va, 2 va-all-asids, 1 asid, 0 all"),
        "{quiet}"
    );
    assert!(!quiet.contains("fallback"), "{quiet}");
    rep.fallback = Some(Fallback::Threshold);
    assert!(rep.fell_back());
    let text = format!("{rep}");
    assert!(text.ends_with("; fallback: Threshold"), "{text}");
}

#[test]
fn linux_arm32_range_ops_count_every_page_the_range_touches() {
    // One TLBIMVA per 4 KiB page of `[start, end)`, partial pages included; nothing for
    // an empty or inverted range.
    assert_eq!(linux_arm32_range_ops(0x1000, 0x1000), 0);
    assert_eq!(linux_arm32_range_ops(0x3000, 0x1000), 0);
    assert_eq!(linux_arm32_range_ops(0x1000, 0x2000), 1);
    assert_eq!(linux_arm32_range_ops(0x1000, 0x5000), 4);
    assert_eq!(linux_arm32_range_ops(0x1800, 0x2001), 2);
    assert_eq!(linux_arm32_range_ops(0, 1 << 32), 1 << 20);
}

#[test]
fn linux_arm32_estimate_follows_its_policy() {
    use crate::sink::{ChangedLeaf, ClearedLeaf, UnmapSink};
    let cleared = |va: u32| ClearedLeaf {
        va: VirtAddr::new(va),
        size: MapSize::Page4K,
        pa: PhysAddr::new(0x4000_0000),
        global: false,
        executable: false,
    };
    // Nothing reported: no flush and no operation.
    let mut e = LinuxArm32Estimate::new(false);
    assert_eq!((e.finish(), e.flushes()), (0, 0));
    // Leaves 1 MiB apart, the higher first, then one inside: the range grows at both
    // ends to [0x1000_0000, 0x1010_1000), 257 pages, in the one final flush.
    let mut e = LinuxArm32Estimate::new(false);
    for va in [0x1010_0000, 0x1000_0000, 0x1008_0000] {
        e.leaf_cleared(cleared(va));
    }
    assert_eq!((e.ops_so_far(), e.flushes()), (0, 0));
    assert_eq!(e.finish(), 257);
    assert_eq!((e.ops_so_far(), e.flushes()), (257, 1));
    // A changed leaf widens the range by its size and batches no page.
    let mut e = LinuxArm32Estimate::new(false);
    e.leaf_changed(ChangedLeaf {
        va: VirtAddr::new(0x2000_0000),
        size: MapSize::Large64K,
        global: false,
        executable: false,
    });
    assert_eq!((e.finish(), e.flushes()), (16, 1));
    // A freed table alone is a batched page with no range: one flush of no operation.
    let mut e = LinuxArm32Estimate::new(false);
    e.table_memory_freed(PhysAddr::new(0x5000_0000), 1);
    assert_eq!((e.finish(), e.flushes()), (0, 1));
    // A classic table unlinked at 0x1030_0000 (1 MiB span) widens by the two pages
    // around the middle of its 2 MiB pair, [0x102f_f000, 0x1030_1000); with a leaf at
    // 0x1040_0000 the range is [0x102f_f000, 0x1040_1000), 258 pages.
    let mut e = LinuxArm32Estimate::new(false);
    e.table_unlinked(VirtAddr::new(0x1030_0000), 1 << 20, false);
    e.leaf_cleared(cleared(0x1040_0000));
    assert_eq!(e.finish(), 258);
    // Alone, the same table is those two pages.
    let mut e = LinuxArm32Estimate::new(false);
    e.table_unlinked(VirtAddr::new(0x1030_0000), 1 << 20, false);
    assert_eq!(e.finish(), 2);
    // An LPAE table (2 MiB span) widens by the one page at its first VA.
    let mut e = LinuxArm32Estimate::new(false);
    e.table_unlinked(VirtAddr::new(0x1020_0000), 2 << 20, false);
    e.leaf_cleared(cleared(0x1040_0000));
    assert_eq!(e.finish(), 0x201);
    // Full-mm mode: one ASID flush per flush, whatever the range.
    let mut e = LinuxArm32Estimate::new(true);
    e.leaf_cleared(cleared(0x1000_0000));
    e.leaf_cleared(cleared(0x3000_0000));
    assert_eq!((e.finish(), e.flushes()), (1, 1));
    // A full batch flushes by itself: the range so far, then the rest at the end.
    let mut e = LinuxArm32Estimate::new(false);
    let n = LINUX_ARM32_BATCH_CAPACITY as u32;
    for i in 0..=n {
        e.leaf_cleared(cleared(0x1000_0000 + i * 4096));
    }
    assert_eq!((e.ops_so_far(), e.flushes()), (u64::from(n), 1));
    assert_eq!((e.finish(), e.flushes()), (u64::from(n) + 1, 2));
}

/// A sink that writes down each report it gets, tagged with its name.
struct Calls(&'static str, Rc<RefCell<Vec<String>>>);

impl crate::sink::UnmapSink for Calls {
    fn leaf_cleared(&mut self, leaf: crate::sink::ClearedLeaf) {
        self.1
            .borrow_mut()
            .push(format!("{} cleared {}", self.0, leaf.va));
    }
    fn table_unlinked(&mut self, va: VirtAddr, span: u64, global: bool) {
        self.1
            .borrow_mut()
            .push(format!("{} unlinked {va} {span:#x} {global}", self.0));
    }
    fn table_memory_freed(&mut self, pa: PhysAddr, frames: usize) {
        self.1
            .borrow_mut()
            .push(format!("{} freed {pa} x{frames}", self.0));
    }
    fn leaf_changed(&mut self, leaf: crate::sink::ChangedLeaf) {
        self.1
            .borrow_mut()
            .push(format!("{} changed {}", self.0, leaf.va));
    }
    fn flush_now(&mut self) {
        self.1.borrow_mut().push(format!("{} flush", self.0));
    }
}

#[test]
fn a_tee_forwards_every_report_to_both_sinks_in_order() {
    use crate::sink::{ChangedLeaf, ClearedLeaf, UnmapSink};
    let log = Rc::new(RefCell::new(Vec::new()));
    let mut a = Calls("a", log.clone());
    let mut b = Calls("b", log.clone());
    let mut tee = Tee::new(&mut a, &mut b);
    tee.leaf_cleared(ClearedLeaf {
        va: VirtAddr::new(0x1000),
        size: MapSize::Page4K,
        pa: PhysAddr::new(0x4000_0000),
        global: false,
        executable: false,
    });
    tee.table_unlinked(VirtAddr::new(0x10_0000), 1 << 20, true);
    tee.table_memory_freed(PhysAddr::new(0x5000_0000), 1);
    tee.leaf_changed(ChangedLeaf {
        va: VirtAddr::new(0x2000),
        size: MapSize::Page4K,
        global: false,
        executable: true,
    });
    tee.flush_now();
    let want: Vec<String> = [
        "cleared 0x00001000",
        "unlinked 0x00100000 0x100000 true",
        "freed 0x50000000 x1",
        "changed 0x00002000",
        "flush",
    ]
    .iter()
    .flat_map(|e| [format!("a {e}"), format!("b {e}")])
    .collect();
    assert_eq!(*log.borrow(), want);
}

#[test]
fn linux_arm32_batch_capacity_is_the_bundle_and_nine_batch_pages() {
    // `MAX_GATHER_BATCH_COUNT` pages of 1021 entries after the 8-entry on-stack bundle.
    assert_eq!(LINUX_ARM32_BATCH_CAPACITY, 8 + 9 * 1021);
}

#[test]
fn the_published_bits_of_a_global_table_are_both() {
    assert_eq!(SEEN_GLOBAL_TABLES, SEEN_TABLES | SEEN_GLOBAL);
}

#[test]
fn a_threshold_fallback_after_changed_global_leaves_is_tlbiall() {
    // Protect of more global leaves than the threshold (a `Layout::Whole` space): the
    // fallback must drop them for every ASID, TLBIALL, not the space's TLBIASID.
    for global in [true, false] {
        let r = Rig::new();
        let f = InFlight::new();
        let cfg = GatherConfig {
            max_invalidates: 2,
            ..GatherConfig::DEFAULT
        };
        let mut g = r.gather_cfg(Scope::Asid(Asid(A)), &f, cfg);
        for i in 0..3u32 {
            g.leaf_changed(crate::sink::ChangedLeaf {
                va: VirtAddr::new(0x10_0000 + i * 4096),
                size: MapSize::Page4K,
                global,
                executable: false,
            });
        }
        let rep = g.finish();
        assert_eq!(rep.fallback, Some(Fallback::Threshold), "global {global}");
        assert_eq!(
            (rep.invalidates.all, rep.invalidates.asid),
            if global { (1, 0) } else { (0, 1) },
            "global {global}"
        );
        r.assert_clean();
    }
}

#[test]
fn a_forced_flush_is_counted_and_flushes() {
    // `flush_now` (the walker's break-before-make) flushes at once, and the report says
    // how many the walker forced.
    let mut r = Rig::new();
    let f = InFlight::new();
    let mut g = r.gather(Scope::Asid(Asid(A)), &f);
    r.page(&mut g, 0x1000, A);
    g.flush_now();
    assert_eq!(
        r.w.borrow().outstanding.len(),
        0,
        "freed by the forced flush"
    );
    g.flush_now();
    let rep = g.finish();
    // Only the first had anything to flush.
    assert_eq!((rep.forced_flushes, rep.flushes), (2, 1));
    r.assert_clean();
}

#[test]
fn a_table_sync_behind_a_reference_still_syncs() {
    struct Count(core::cell::Cell<u32>);
    impl TableFreeSync for Count {
        fn sync_before_table_free(&self) {
            self.0.set(self.0.get() + 1);
        }
    }
    let c = Count(core::cell::Cell::new(0));
    let by_ref: &dyn TableFreeSync = &&c;
    by_ref.sync_before_table_free();
    assert_eq!(c.0.get(), 1);
}

#[test]
fn nested_fallback_without_tables_stays_one_tlbiasid() {
    // With `asid_flush_drops_walk_cache` off, only a freed or unlinked table (ours, or
    // one another in-flight gather published) makes the fallback a TLBIALL: gathers that
    // cleared only leaves of the ASID keep the cheaper TLBIASID.
    let mut r = Rig::new();
    let f = InFlight::new();
    let cfg = GatherConfig {
        asid_flush_drops_walk_cache: false,
        ..GatherConfig::DEFAULT
    };
    let mut g1 = r.gather_cfg(Scope::Asid(Asid(A)), &f, cfg);
    let mut g0 = r.gather_cfg(Scope::Asid(Asid(A)), &f, cfg);
    r.page(&mut g1, 0x5000, A);
    r.page(&mut g0, 0x9000, A);
    let rep0 = g0.finish();
    assert_eq!(rep0.fallback, Some(Fallback::Nested));
    assert_eq!((rep0.invalidates.all, rep0.invalidates.asid), (0, 1));
    let _ = g1.finish();
    r.assert_clean();
}

#[test]
fn nested_gather_flushes_even_with_nothing_recorded() {
    let r = Rig::new();
    let f = InFlight::new();
    let g1 = r.gather(Scope::Asid(Asid(A)), &f);
    let g0 = r.gather(Scope::Asid(Asid(A)), &f);
    let rep0 = g0.finish();
    assert_eq!((rep0.invalidates.asid, rep0.completions), (1, 1));
    let rep1 = g1.finish();
    assert_eq!(rep1.completions, 0);
}

// ---- Teeth: the world must catch a broken flush. ---------------------------------

#[test]
fn teeth_missing_invalidate_is_caught() {
    let mut r = Rig::new();
    r.w.borrow_mut().skip_va = true;
    let f = InFlight::new();
    let mut g = r.gather(Scope::Asid(Asid(A)), &f);
    r.page(&mut g, 0x1000, A);
    let _ = g.finish();
    let v = r.violations();
    assert!(v.iter().any(|m| m.contains("still reachable")), "{v:?}");
}

#[test]
fn teeth_missing_completion_is_caught() {
    let mut r = Rig::new();
    r.w.borrow_mut().skip_complete = true;
    let f = InFlight::new();
    let mut g = r.gather(Scope::Asid(Asid(A)), &f);
    r.tables(&mut g, &[0x0010_0000], A, false);
    let _ = g.finish();
    assert!(r.violations().iter().any(|m| m.contains("table")));
}

#[test]
fn teeth_free_before_flush_is_caught() {
    // What a gather-less unmap does (free as soon as the entry is cleared).
    let mut r = Rig::new();
    let f = InFlight::new();
    let mut g = r.gather(Scope::Asid(Asid(A)), &f);
    r.page(&mut g, 0x1000, A);
    let pa = *r.w.borrow().outstanding.keys().next().unwrap();
    r.mem()
        .release_mapped(VirtAddr::new(0x1000), PhysAddr::new(pa), 4096);
    assert!(r.violations().iter().any(|m| m.contains("still reachable")));
    drop(g);
    assert!(r.violations().iter().any(|m| m.contains("double free")));
}

#[test]
fn teeth_wrong_asid_is_caught() {
    let mut r = Rig::new();
    let f = InFlight::new();
    let mut g = r.gather(Scope::Asid(Asid(A + 1)), &f);
    r.page(&mut g, 0x1000, A);
    let _ = g.finish();
    assert!(!r.violations().is_empty());
}

// ---- Randomised sequences against the world (no page tables needed). --------------

mod props {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Leaf {
            slot: u16,
            size: u8,
            global: bool,
            exec: bool,
        },
        Tables {
            first: u16,
            count: u8,
        },
        Flush,
        FailAllocs(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (0u16..4096, 0u8..4, any::<bool>(), any::<bool>()).prop_map(
                |(slot, size, g, exec)| Op::Leaf { slot, size, global: g && slot % 7 == 0, exec }
            ),
            2 => (0u16..64, 1u8..5).prop_map(|(first, count)| Op::Tables { first, count }),
            1 => Just(Op::Flush),
            1 => (0u8..3).prop_map(Op::FailAllocs),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        #[test]
        fn random_sequences_never_free_early(
            ops in proptest::collection::vec(op(), 1..400),
            limit in 0usize..70,
            frames in 0usize..3,
            teardown in any::<bool>(),
            drop_it in any::<bool>(),
            trust in any::<bool>(),
        ) {
            let mut r = Rig::new();
            let f = InFlight::new();
            let cfg = GatherConfig { max_invalidates: limit, max_batch_frames: frames, asid_flush_drops_walk_cache: trust };
            let scope = if teardown { Scope::Teardown(Asid(A)) } else { Scope::Asid(Asid(A)) };
            let mut g = r.gather_cfg(scope, &f, cfg);
            let mut leaves = 0u64;
            let mut regions = 0u64;
            let mut used = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Leaf { slot, size, global, exec } => {
                        let size = [MapSize::Page4K, MapSize::Large64K, MapSize::Section1M, MapSize::Super16M][size as usize];
                        let va = (slot as u64 * (1 << 16)) & !(size.bytes() - 1);
                        if !used.insert(va) { continue; }
                        r.leaf(&mut g, va as u32, size, if global { 0 } else { A }, (global, exec));
                        leaves += 1;
                    }
                    Op::Tables { first, count } => {
                        let regs: Vec<u32> = (first..first + count as u16).map(|i| 0x8000_0000 + ((i as u32) << 20)).collect();
                        r.tables(&mut g, &regs, A, false);
                        regions += regs.len() as u64;
                    }
                    Op::Flush => g.flush(),
                    Op::FailAllocs(n) => r.w.borrow_mut().batch_allocs_left = Some(n as usize),
                }
                prop_assert_eq!(r.violations(), Vec::<String>::new());
            }
            let rep = if drop_it { drop(g); None } else { Some(g.finish()) };
            r.assert_clean();
            let c = r.w.borrow().counters;
            prop_assert_eq!(c.prepares, c.completions);
            if let Some(rep) = rep {
                prop_assert_eq!(rep.completions as u64, c.completions);
                prop_assert_eq!(rep.invalidates.tlb_ops(), c.invalidates());
                // Per flush, either by-VA ops within the limit or one fallback op; in total
                // never more than one per cleared leaf / unlinked table region, plus at most
                // one fallback op per flush.
                prop_assert!(c.va + c.va_all_asids <= leaves + regions);
                prop_assert!(c.asid + c.all <= rep.flushes as u64);
                if teardown { prop_assert_eq!(c.va + c.va_all_asids, 0); }
            }
        }
    }
}

// ---- The table-free sync hook (lockless software walkers) -------------------------------

/// A sync hook that logs into the world, and checks at the moment it runs that the TLB
/// work before it has completed (no batch open) and that it is not inside a batch.
struct LoggingSync(Shared);

impl TableFreeSync for LoggingSync {
    fn sync_before_table_free(&self) {
        let mut w = self.0.borrow_mut();
        if w.in_batch {
            w.violations.push("sync inside an open TLB batch".into());
        }
        w.log.push("sync");
    }
}

/// Every table free must come after a sync that itself came after the last completion
/// before it; returns the number of syncs.
fn check_sync_order(log: &[&str]) -> usize {
    let mut synced_since_complete = false;
    let mut completed = false;
    for (i, &e) in log.iter().enumerate() {
        match e {
            "complete" => {
                completed = true;
                synced_since_complete = false;
            }
            "sync" => {
                assert!(completed, "sync before any completion: {log:?}");
                synced_since_complete = true;
            }
            "free_table" => {
                assert!(
                    synced_since_complete || log[..i].contains(&"sync"),
                    "table freed without a sync before it: {log:?}"
                );
                // The sync that covers it came after the completion covering it.
                let last_sync = log[..i].iter().rposition(|&x| x == "sync").unwrap();
                let first_complete = log.iter().position(|&x| x == "complete").unwrap();
                assert!(first_complete < last_sync, "{log:?}");
            }
            _ => {}
        }
    }
    log.iter().filter(|&&e| e == "sync").count()
}

#[test]
fn table_sync_runs_after_completion_before_table_frees() {
    let mut r = Rig::new();
    let f = InFlight::new();
    let sync = LoggingSync(r.w.clone());
    let mut g = r.gather(Scope::Asid(Asid(A)), &f).with_table_sync(&sync);
    r.page(&mut g, 0x0010_5000, A);
    r.tables(&mut g, &[0x0010_0000], A, false);
    let rep = g.finish();
    assert_eq!(rep.table_syncs, 1);
    assert_eq!(
        r.log(),
        ["prepare", "va", "complete", "sync", "free", "free_table"]
    );
    assert_eq!(check_sync_order(&r.log()), 1);
    r.assert_clean();
}

#[test]
fn pages_alone_need_no_table_sync() {
    let mut r = Rig::new();
    let f = InFlight::new();
    let sync = LoggingSync(r.w.clone());
    let mut g = r.gather(Scope::Asid(Asid(A)), &f).with_table_sync(&sync);
    for i in 0..100u32 {
        r.page(&mut g, i << 12, A);
    }
    let rep = g.finish();
    assert_eq!(rep.table_syncs, 0);
    assert!(!r.log().contains(&"sync"));
    r.assert_clean();
}

#[test]
fn without_a_hook_nothing_is_synced_and_the_order_is_unchanged() {
    let mut r = Rig::new();
    let f = InFlight::new();
    let mut g = r.gather(Scope::Asid(Asid(A)), &f);
    r.tables(&mut g, &[0x0010_0000], A, false);
    let rep = g.finish();
    assert_eq!(rep.table_syncs, 0);
    assert_eq!(r.log(), ["prepare", "va", "complete", "free_table"]);
    // The documented default is the same as an explicit no-op hook.
    let mut r2 = Rig::new();
    let mut g2 = r2
        .gather(Scope::Asid(Asid(A)), &f)
        .with_table_sync(&NoTableSync);
    r2.tables(&mut g2, &[0x0010_0000], A, false);
    let rep2 = g2.finish();
    assert_eq!(r2.log(), r.log());
    assert_eq!(rep2.table_syncs, 1, "the no-op hook is still called");
    r.assert_clean();
    r2.assert_clean();
}

#[test]
fn table_sync_once_per_flush_that_frees_tables() {
    // Early flushes (no batch frame): tables are batched across several flushes; each
    // drain that hands table memory back syncs once, after its completion.
    let mut r = Rig::new();
    r.w.borrow_mut().batch_allocs_left = Some(0);
    let f = InFlight::new();
    let sync = LoggingSync(r.w.clone());
    let mut g = r.gather(Scope::Asid(Asid(A)), &f).with_table_sync(&sync);
    for k in 0..(3 * LOCAL_BATCH) as u32 {
        r.tables(&mut g, &[k * 4 * MIB as u32], A, false);
    }
    let rep = g.finish();
    assert!(rep.early_flushes >= 2);
    assert_eq!(rep.table_frames_freed as usize, 3 * LOCAL_BATCH);
    let syncs = check_sync_order(&r.log());
    assert_eq!(syncs as u32, rep.table_syncs);
    assert!(syncs as u32 <= rep.flushes + 1 && syncs >= 2);
    r.assert_clean();
}

#[test]
fn table_freed_at_once_is_synced_first() {
    // Table memory that cannot be batched is flushed and freed on the spot: the sync still
    // comes between the completion and the free.
    let r = Rig::new();
    let f = InFlight::new();
    let sync = LoggingSync(r.w.clone());
    let mut g = r.gather(Scope::Asid(Asid(A)), &f).with_table_sync(&sync);
    // Table memory past 2^40 cannot be batched: it is flushed and freed at once.
    let tpa = 1u64 << 40;
    r.reachable((0x0100_0000, 0x0110_0000), false, A, tpa, 12);
    g.table_unlinked(VirtAddr::new(0x0100_0000), MIB, false);
    g.table_memory_freed(PhysAddr::new(tpa), 12);
    assert_eq!(r.log(), ["prepare", "va", "complete", "sync", "free_table"]);
    let rep = g.finish();
    assert_eq!(rep.table_syncs, 1);
    r.assert_clean();
}

#[test]
fn teeth_sync_checker_catches_a_table_freed_before_the_sync() {
    // The order checker itself must fail on a log where a table went back unsynced, or
    // where the sync ran before the completion.
    let bad1 = ["prepare", "va", "complete", "free_table", "sync"];
    assert!(std::panic::catch_unwind(|| check_sync_order(&bad1)).is_err());
    let bad2 = ["sync", "prepare", "va", "complete", "free_table"];
    assert!(std::panic::catch_unwind(|| check_sync_order(&bad2)).is_err());
}

#[test]
fn asid_source_is_read_at_flush_time() {
    use crate::asid::{AsidAllocator, AsidContext};
    let mut r = Rig::new();
    let f = InFlight::new();
    let alloc = AsidAllocator::<1>::new();
    let ctx = AsidContext::new();
    let first = alloc.switch_to(0, &ctx).unwrap().asid;
    // A gather opened with the first ASID; the space is renumbered (rollover while it runs
    // nowhere) and runs again, creating entries under the new number, before the unmap.
    let mut g = r.gather(Scope::Asid(first), &f).with_asid_source(&ctx);
    let others: Vec<AsidContext> = (0..300).map(|_| AsidContext::new()).collect();
    for c in &others {
        let _ = alloc.switch_to(0, c).unwrap();
    }
    let now = alloc.switch_to(0, &ctx).unwrap().asid;
    assert_ne!(now, first, "the space was renumbered");
    assert_eq!(g.scope(), Scope::Asid(now));
    r.page(&mut g, 0x5000, now.0);
    g.finish();
    r.assert_clean();

    // Teeth: without the source the flush names the old number and the entry survives.
    let mut r = Rig::new();
    let mut g = r.gather(Scope::Asid(first), &f);
    r.page(&mut g, 0x5000, now.0);
    g.finish();
    assert!(!r.violations().is_empty());
}

//! The hostile-input property harness (issue 15, item 3; feature `tlb-model`).
//!
//! Both formats, every layout, every [`MapSize`]; random `map` / `unmap` / `protect` /
//! `free_tables` sequences, several per gather (random [`GatherConfig`]), with hostile
//! arguments (misaligned or unreachable PAs, VAs outside the layout, cut blocks, global
//! leaves in a user space, executable device memory, bad free bounds) and hostile memory:
//! every frame it hands out is filled with junk, its frames sit either low or right below
//! the format's physical limit, and allocations fail at random. After every operation:
//!
//! - translations (tables and the adversarial TLB model, once the gather finished) agree
//!   with a simple extent model;
//! - a failed operation changed no byte of table memory and kept no frame;
//! - the TLB model's invariants: no freed frame is reachable through a cached entry
//!   ([`FreeChecker`]), the invalidate protocol was followed, every frame is freed once
//!   and every unmapped data range released exactly once.
//!
//! It is `#[ignore]`d in plain `cargo test` and run by `cargo xtask test` (bounded), or by
//! `cargo xtask hostile --long` (ten times the operations). It prints its operation
//! counts, so a run that silently tests nothing shows.

use std::boxed::Box;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::format;
use std::println;
use std::rc::Rc;
use std::string::String;
use std::vec::Vec;

use super::attrs::{Access, Attributes, Execute};
use super::tests::TestFormat;
use super::{AddressSpace, Layout};
use crate::addr::{PhysAddr, VirtAddr, VirtRange};
use crate::gather::{GatherConfig, InFlight, MmuGather, Scope};
use crate::lpae::Lpae;
use crate::memory::Memory;
use crate::short::Short;
use crate::sink::MapSize;
use crate::tlb::model::{FreeChecker, SharedTlbModel};
use crate::tlb::{Asid, TlbBackend, TlbCounters};

const ASID: Asid = Asid(9);
const MIB: u64 = 1 << 20;
const SIZES: [MapSize; 6] = [
    MapSize::Page4K,
    MapSize::Large64K,
    MapSize::Section1M,
    MapSize::Block2M,
    MapSize::Super16M,
    MapSize::Block1G,
];

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, permille: u64) -> bool {
        self.below(1000) < permille
    }
}

// ----- hostile memory ----------------------------------------------------------------

struct Block {
    words: Box<[u64]>,
    frames: usize,
    /// Lent to the gather (batch frame) rather than the tables.
    batch: bool,
}

#[derive(Default)]
struct Frames {
    live: BTreeMap<u64, Block>,
    /// Freed blocks, kept (junk-filled) so a stale walk reads junk, as on hardware.
    dead: BTreeMap<u64, Block>,
    /// Table frames come from here down (near the limit) or up (low).
    cursor: u64,
    near_limit: bool,
    fail_permille: u64,
    rng: Option<Rng>,
    allocs: u64,
    failed: u64,
    frees: u64,
    errors: Vec<String>,
    /// `release_mapped` calls: (va, pa, bytes).
    released: Vec<(u64, u64, u64)>,
}

#[derive(Clone)]
struct Hostile {
    st: Rc<RefCell<Frames>>,
    batch: bool,
}

impl Hostile {
    fn junk(rng: &mut Rng, words: usize) -> Box<[u64]> {
        (0..words).map(|_| rng.next()).collect()
    }
    /// A hash of every table frame's bytes, and the set of table frames.
    fn snapshot(&self) -> (u64, Vec<u64>) {
        let st = self.st.borrow();
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        let mut pas = Vec::new();
        for (pa, b) in st.live.iter().filter(|(_, b)| !b.batch) {
            pas.push(*pa);
            for w in b.words.iter() {
                h = (h ^ w).wrapping_mul(0x100_0000_01b3);
            }
        }
        (h, pas)
    }
    fn find(&self, pa: u64) -> Option<core::ptr::NonNull<u8>> {
        let st = self.st.borrow();
        for map in [&st.live, &st.dead] {
            if let Some((base, b)) = map.range(..=pa).next_back() {
                if pa < base + b.frames as u64 * 4096 {
                    let off = (pa - base) as usize;
                    let p = b.words.as_ptr().cast::<u8>().wrapping_add(off);
                    return core::ptr::NonNull::new(p.cast_mut());
                }
            }
        }
        None
    }
}

// SAFETY: every PA handed out is backed by a heap buffer that lives (live or dead) as long
// as the `Frames`, and `phys_to_virt` only answers for those.
unsafe impl Memory for Hostile {
    fn allocate_frames(&mut self, count: usize, align: usize) -> Option<PhysAddr> {
        let mut st = self.st.borrow_mut();
        let st = &mut *st;
        let rng = st.rng.as_mut().expect("rng");
        if rng.chance(st.fail_permille) {
            st.failed += 1;
            return None;
        }
        let align = (align as u64).max(4096);
        let bytes = count as u64 * 4096;
        let pa = if st.near_limit {
            let pa = st.cursor.checked_sub(bytes)? & !(align - 1);
            st.cursor = pa;
            pa
        } else {
            let pa = st.cursor.div_ceil(align) * align;
            st.cursor = pa + bytes;
            pa
        };
        let words = Self::junk(rng, count * 512);
        st.allocs += 1;
        st.live.insert(
            pa,
            Block {
                words,
                frames: count,
                batch: self.batch,
            },
        );
        Some(PhysAddr::new(pa))
    }
    fn free_frames(&mut self, pa: PhysAddr, count: usize) {
        let mut st = self.st.borrow_mut();
        let pa = pa.as_u64();
        st.frees += 1;
        match st.live.remove(&pa) {
            Some(mut b) => {
                if b.frames != count {
                    st.errors
                        .push(format!("{pa:#x}: {count} frames freed, {} given", b.frames));
                }
                let rng = st.rng.as_mut().expect("rng");
                b.words = Self::junk(rng, b.frames * 512);
                st.dead.insert(pa, b);
            }
            None => st
                .errors
                .push(format!("{pa:#x} freed but not allocated (double free?)")),
        }
    }
    fn phys_to_virt(&self, pa: PhysAddr) -> core::ptr::NonNull<u8> {
        self.find(pa.as_u64())
            .unwrap_or_else(|| panic!("phys_to_virt({pa}) of a frame never handed out"))
    }
    fn release_mapped(&mut self, va: VirtAddr, pa: PhysAddr, bytes: usize) {
        self.st
            .borrow_mut()
            .released
            .push((va.as_u64(), pa.as_u64(), bytes as u64));
    }
}

/// The TLB model as the gathers' backend; `broken` drops every by-VA invalidate (the teeth
/// of the harness: it must notice).
struct Backend {
    tlb: SharedTlbModel,
    broken: bool,
}

impl TlbBackend for Backend {
    fn prepare(&mut self) {
        self.tlb.prepare()
    }
    fn invalidate_va(&mut self, va: VirtAddr, asid: Asid) {
        if !self.broken {
            self.tlb.invalidate_va(va, asid)
        }
    }
    fn invalidate_va_all_asids(&mut self, va: VirtAddr) {
        if !self.broken {
            self.tlb.invalidate_va_all_asids(va)
        }
    }
    fn invalidate_asid(&mut self, asid: Asid) {
        self.tlb.invalidate_asid(asid)
    }
    fn invalidate_all(&mut self) {
        self.tlb.invalidate_all()
    }
    fn invalidate_branch_predictor(&mut self) {
        self.tlb.invalidate_branch_predictor()
    }
    fn complete(&mut self) {
        self.tlb.complete()
    }
    fn counters(&self) -> TlbCounters {
        self.tlb.counters()
    }
}

// ----- the model -----------------------------------------------------------------------

/// Mapped extents: start VA -> (end VA, PA of start).
#[derive(Default, Clone)]
struct Model(BTreeMap<u64, (u64, u64)>);

impl Model {
    fn lookup(&self, va: u64) -> Option<u64> {
        let (&s, &(e, pa)) = self.0.range(..=va).next_back()?;
        (va < e).then_some(pa + (va - s))
    }
    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.0
            .range(..end)
            .next_back()
            .is_some_and(|(_, &(e, _))| e > start)
    }
    /// Removes `[start, end)`; returns the removed pieces.
    fn remove(&mut self, start: u64, end: u64) -> Vec<(u64, u64, u64)> {
        let hit: Vec<(u64, (u64, u64))> = self
            .0
            .range(..end)
            .filter(|(_, &(e, _))| e > start)
            .map(|(&s, &v)| (s, v))
            .collect();
        let mut out = Vec::new();
        for (s, (e, pa)) in hit {
            self.0.remove(&s);
            if s < start {
                self.0.insert(s, (start, pa));
            }
            if e > end {
                self.0.insert(end, (e, pa + (end - s)));
            }
            let (a, b) = (s.max(start), e.min(end));
            out.push((a, b, pa + (a - s)));
        }
        out
    }
}

#[derive(Default, Debug, Clone, Copy)]
struct Counts {
    runs: u64,
    ops: u64,
    maps_ok: u64,
    maps_refused: u64,
    unmaps_ok: u64,
    unmaps_refused: u64,
    leaves_unmapped: u64,
    protects_ok: u64,
    protects_refused: u64,
    free_tables_ok: u64,
    free_tables_refused: u64,
    table_frames_freed: u64,
    gathers: u64,
    allocs: u64,
    alloc_failures: u64,
    translations_checked: u64,
    tlb_accesses: u64,
}

fn range(start: u64, len: u64) -> Option<VirtRange> {
    if start >= 1 << 32 {
        return None;
    }
    VirtRange::from_start_len(VirtAddr::new(start as u32), len.min((1 << 32) - start)).ok()
}

struct Run<F: TestFormat> {
    space: AddressSpace<F, Hostile>,
    mem: Hostile,
    tlb: SharedTlbModel,
    checker: FreeChecker<Hostile>,
    in_flight: InFlight,
    model: Model,
    layout: Layout,
    rng: Rng,
    /// Where made-up data PAs come from, and the format's PA limit.
    data_pa: u64,
    pa_limit: u64,
    /// The VA window most operations play in.
    window: (u64, u64),
    counts: Counts,
    broken: bool,
}

impl<F: TestFormat> Run<F> {
    fn new(layout: Layout, near_limit: bool, seed: u64, pa_limit: u64) -> Result<Self, String> {
        let mut rng = Rng(seed);
        let fail_permille = [0, 20, 150][rng.below(3) as usize];
        let frames = Frames {
            cursor: if near_limit { pa_limit } else { 0x1000_0000 },
            near_limit,
            fail_permille,
            rng: Some(Rng(seed ^ 0x5555)),
            ..Frames::default()
        };
        let mem = Hostile {
            st: Rc::new(RefCell::new(frames)),
            batch: false,
        };
        // Creation may fail (junk or not, failures are random): it must keep nothing.
        let space = loop {
            match AddressSpace::<F, _>::new(mem.clone(), layout, F::ALL) {
                Ok(s) => break s,
                Err(_) => {
                    if !mem.snapshot().1.is_empty() {
                        return Err("a failed AddressSpace::new kept frames".into());
                    }
                }
            }
        };
        let tlb = SharedTlbModel::new();
        let checker = FreeChecker::new(
            Hostile {
                st: mem.st.clone(),
                batch: true,
            },
            tlb.clone(),
        );
        let (lo, hi) = layout.bounds();
        let w = 64 * MIB;
        let window = match layout {
            l if l.is_user() => (hi.saturating_sub(w).max(lo), hi),
            _ => (lo, (lo + w).min(hi)),
        };
        Ok(Self {
            space,
            mem,
            tlb,
            checker,
            in_flight: InFlight::new(),
            model: Model::default(),
            layout,
            rng,
            data_pa: if near_limit {
                pa_limit / 2
            } else {
                0x8000_0000
            },
            pa_limit,
            window,
            counts: Counts::default(),
            broken: false,
        })
    }

    fn user(&self) -> bool {
        self.layout.is_user()
    }

    fn scope(&self) -> Scope {
        if self.user() {
            Scope::Asid(ASID)
        } else {
            Scope::Kernel
        }
    }

    /// A VA range: mostly in the window, sometimes anywhere (even outside the layout).
    fn pick_range(&mut self, size: MapSize) -> Option<(u64, u64)> {
        let b = size.bytes();
        let (lo, hi) = if self.rng.chance(100) || b >= 1 << 30 {
            (0, 1u64 << 32)
        } else {
            self.window
        };
        let span = (hi - lo).max(b);
        let mut start = lo + self.rng.below(span / 4096) * 4096;
        if !self.rng.chance(150) {
            start &= !(b - 1);
        }
        let count = 1 + self.rng.below(3);
        let len = if self.rng.chance(100) {
            4096 * (1 + self.rng.below(16))
        } else {
            b * count
        };
        (start < 1 << 32).then_some((start, len.min((1 << 32) - start)))
    }

    fn attrs(&mut self) -> Attributes {
        let global = !self.user() ^ self.rng.chance(50);
        let mut a = match self.rng.below(5) {
            0 => Attributes::KERNEL_IMAGE,
            1 => Attributes::DEVICE,
            2 => Attributes::USER_DATA,
            _ => Attributes::KERNEL_DATA,
        };
        a.global = global;
        if self.rng.chance(30) {
            a.execute = Execute::Anywhere; // with DEVICE: executable device memory
        }
        a
    }

    /// Checks translations of a few VAs, in the tables and (with `tlb`) through the TLB.
    fn check_translations(&mut self, around: &[u64], tlb: bool) -> Result<(), String> {
        let mut vas: Vec<u64> = around.to_vec();
        for _ in 0..6 {
            let (lo, hi) = self.window;
            vas.push(lo + self.rng.below((hi - lo) / 4096) * 4096);
        }
        for (&s, &(e, _)) in self.model.0.iter().take(4) {
            vas.push(s);
            vas.push(e - 4096);
        }
        for va in vas {
            if va >= 1 << 32 {
                continue;
            }
            let v = VirtAddr::new(va as u32);
            let want = self.model.lookup(va);
            let got = self.space.translate(v).map(|t| t.pa.as_u64());
            if got != want {
                return Err(format!("tables: {va:#x} -> {got:x?}, model {want:x?}"));
            }
            if tlb {
                let t = self.tlb.borrow().translate(v, ASID, &self.space);
                let got = t.map(|t| t.pa.as_u64());
                if got != want {
                    return Err(format!("TLB: {va:#x} -> {got:x?}, model {want:x?}"));
                }
            }
            self.counts.translations_checked += 1;
        }
        Ok(())
    }

    fn touch(&mut self, va: u64) {
        if va < 1 << 32 {
            let _ = self
                .tlb
                .borrow_mut()
                .access(VirtAddr::new(va as u32), ASID, &self.space);
            self.counts.tlb_accesses += 1;
        }
    }

    fn op_map(&mut self) -> Result<(), String> {
        let size = SIZES[self.rng.below(6) as usize];
        let Some((va, len)) = self.pick_range(size) else {
            return Ok(());
        };
        let max = SIZES[self.rng.below(6) as usize];
        let attrs = self.attrs();
        let align = size.bytes().min(16 * MIB);
        let base = if self.mem.st.borrow().near_limit {
            self.pa_limit / 2
        } else {
            0x8000_0000
        };
        if self.data_pa + len > self.pa_limit - self.pa_limit / 8 {
            // Made-up data PAs wrap round (only the tables must not share frames).
            self.data_pa = base;
        }
        let mut pa = self.data_pa.div_ceil(align) * align;
        // Data PAs stay unique among live mappings (an alias would make a release look
        // like a free of memory another mapping still reaches).
        if self
            .model
            .0
            .iter()
            .any(|(&s, &(e, p))| p < pa + len && pa < p + (e - s))
        {
            return Ok(());
        }
        self.data_pa = pa + len;
        match self.rng.below(40) {
            0 => pa += 0x800,                                 // misaligned
            1 => pa = self.pa_limit - 4096,                   // runs past the limit
            2 => pa = (1u64 << 40) - len.min(1 << 39) + 4096, // past 40 bits
            _ => {}
        }
        let Some(r) = range(va, len) else {
            return Ok(());
        };
        let before = self.mem.snapshot();
        let res = self.space.map(r, PhysAddr::new(pa), attrs, max);
        let end = va + len;
        match res {
            Ok(()) => {
                self.counts.maps_ok += 1;
                let (lo, hi) = self.layout.bounds();
                let bad = self.model.overlaps(va, end)
                    || va < lo
                    || end > hi
                    || !pa.is_multiple_of(4096)
                    || pa + len > 1 << 40
                    || (self.user() && attrs.global)
                    || (!attrs.memory.is_normal() && attrs.execute != Execute::Never);
                if bad {
                    return Err(format!(
                        "map {va:#x}+{len:#x} -> {pa:#x} {attrs:?} succeeded but is invalid"
                    ));
                }
                self.model.0.insert(va, (end, pa));
                self.touch(va);
                self.touch(end - 4096);
                self.check_translations(&[va, end - 4096], false)?;
            }
            Err(e) => {
                self.counts.maps_refused += 1;
                if self.mem.snapshot() != before {
                    return Err(format!("map refused ({e:?}) but changed table memory"));
                }
            }
        }
        Ok(())
    }

    fn op_in_gather(&mut self, g_ops: u64, cfg: GatherConfig) -> Result<(), String> {
        let scope = self.scope();
        let mut expected_released = Model::default();
        let mut changed_vas = Vec::new();
        {
            let Self {
                space,
                tlb,
                checker,
                in_flight,
                model,
                rng,
                counts,
                mem,
                window,
                layout,
                broken,
                ..
            } = self;
            let backend = Backend {
                tlb: tlb.clone(),
                broken: *broken,
            };
            let mut g = MmuGather::with_config(scope, backend, &mut *checker, in_flight, cfg);
            for _ in 0..g_ops {
                counts.ops += 1;
                let size = SIZES[rng.below(6) as usize];
                let b = size.bytes().min(64 * MIB);
                let (lo, hi) = if rng.chance(100) {
                    (0, 1u64 << 32)
                } else {
                    *window
                };
                let mut start = lo + rng.below((hi - lo) / 4096) * 4096;
                if !rng.chance(200) {
                    start &= !(b - 1);
                }
                let len = (b * (1 + rng.below(4))).min((1 << 32) - start);
                let Some(r) = range(start, len) else { continue };
                let end = start + len;
                let before = mem.snapshot();
                match rng.below(3) {
                    0 => match space.unmap(r, &mut g) {
                        Ok(n) => {
                            counts.unmaps_ok += 1;
                            counts.leaves_unmapped += n as u64;
                            for (a, e, pa) in model.remove(start, end) {
                                expected_released.0.insert(a, (e, pa));
                            }
                        }
                        Err(e) => {
                            counts.unmaps_refused += 1;
                            if mem.snapshot() != before {
                                return Err(format!("unmap refused ({e:?}) but changed tables"));
                            }
                        }
                    },
                    1 => {
                        let access = [Access::KernelRw, Access::KernelRo, Access::UserRw]
                            [rng.below(3) as usize];
                        let exec = if rng.chance(300) {
                            Execute::Anywhere
                        } else {
                            Execute::Never
                        };
                        match space.protect(r, access, exec, &mut g) {
                            Ok(_) => {
                                counts.protects_ok += 1;
                                changed_vas.push(start);
                            }
                            Err(e) => {
                                counts.protects_refused += 1;
                                if mem.snapshot() != before {
                                    return Err(format!(
                                        "protect refused ({e:?}) but changed tables"
                                    ));
                                }
                            }
                        }
                    }
                    _ => {
                        let (blo, bhi) = layout.bounds();
                        let bad = rng.chance(100);
                        let floor = if bad {
                            start + 4096
                        } else {
                            start.min(blo.max(start.saturating_sub(b)))
                        };
                        let ceiling = if bad {
                            end
                        } else {
                            (end + b).min(bhi.max(end))
                        };
                        let floor = VirtAddr::new(floor.min(u32::MAX as u64) as u32);
                        // Bounds that are not a range at all cannot even be passed.
                        let Ok(bounds) = crate::addr::VirtEnd::new(ceiling)
                            .and_then(|end| VirtRange::new(floor, end))
                        else {
                            counts.free_tables_refused += 1;
                            continue;
                        };
                        match space.free_tables(r, bounds, &mut g) {
                            Ok(n) => {
                                counts.free_tables_ok += 1;
                                counts.table_frames_freed += n as u64;
                            }
                            Err(e) => {
                                counts.free_tables_refused += 1;
                                if mem.snapshot() != before {
                                    return Err(format!(
                                        "free_tables refused ({e:?}) but changed tables"
                                    ));
                                }
                            }
                        }
                    }
                }
            }
            let _ = g.finish();
            counts.gathers += 1;
        }
        // Every unmapped range released exactly once, at its VA and PA.
        let released: Vec<(u64, u64, u64)> =
            core::mem::take(&mut self.mem.st.borrow_mut().released);
        for (va, pa, bytes) in released {
            let got = expected_released.remove(va, va + bytes);
            let ok = got.len() == 1 && got[0] == (va, va + bytes, pa);
            if !ok {
                return Err(format!(
                    "released {va:#x}+{bytes:#x} at {pa:#x}, expected pieces {got:x?}"
                ));
            }
        }
        if !expected_released.0.is_empty() {
            return Err(format!(
                "unmapped but never released: {:x?}",
                expected_released.0
            ));
        }
        if let Some(v) = self.checker.violations().first() {
            return Err(format!("freed while reachable: {v}"));
        }
        self.tlb
            .borrow()
            .check_protocol()
            .map_err(|e| format!("TLB protocol: {e}"))?;
        if let Some(e) = self.mem.st.borrow().errors.first() {
            return Err(format!("memory: {e}"));
        }
        if self.mem.st.borrow().live.values().any(|b| b.batch) {
            return Err("the gather kept a batch frame".into());
        }
        self.check_translations(&changed_vas, true)
    }

    fn step(&mut self) -> Result<(), String> {
        self.counts.ops += 1;
        match self.rng.below(10) {
            0..=4 => self.op_map(),
            5 => {
                let (lo, hi) = self.window;
                let va = lo + self.rng.below((hi - lo) / 4096) * 4096;
                self.touch(va);
                Ok(())
            }
            _ => {
                self.counts.ops -= 1;
                let cfg = GatherConfig {
                    max_invalidates: [1, 4, 64][self.rng.below(3) as usize],
                    max_batch_frames: self.rng.below(3) as usize,
                    asid_flush_drops_walk_cache: self.rng.chance(700),
                };
                let n = 1 + self.rng.below(4);
                self.op_in_gather(n, cfg)
            }
        }
    }

    /// Tears everything down through a gather: every frame comes back.
    fn finish(mut self) -> Result<Counts, String> {
        self.mem.st.borrow_mut().fail_permille = 0;
        let scope = self.scope();
        {
            let mut g = MmuGather::new(scope, self.tlb.clone(), &mut self.checker, &self.in_flight);
            let _ = self.space.destroy(&mut g);
            let _ = g.finish();
        }
        if let Some(v) = self.checker.violations().first() {
            return Err(format!("teardown freed while reachable: {v}"));
        }
        let st = self.mem.st.borrow();
        if let Some(e) = st.errors.first() {
            return Err(format!("memory: {e}"));
        }
        if !st.live.is_empty() {
            return Err(format!("{} blocks never freed", st.live.len()));
        }
        let mut c = self.counts;
        c.runs = 1;
        c.allocs = st.allocs;
        c.alloc_failures = st.failed;
        Ok(c)
    }
}

fn add(a: &mut Counts, b: Counts) {
    a.runs += b.runs;
    a.ops += b.ops;
    a.maps_ok += b.maps_ok;
    a.maps_refused += b.maps_refused;
    a.unmaps_ok += b.unmaps_ok;
    a.unmaps_refused += b.unmaps_refused;
    a.leaves_unmapped += b.leaves_unmapped;
    a.protects_ok += b.protects_ok;
    a.protects_refused += b.protects_refused;
    a.free_tables_ok += b.free_tables_ok;
    a.free_tables_refused += b.free_tables_refused;
    a.table_frames_freed += b.table_frames_freed;
    a.gathers += b.gathers;
    a.allocs += b.allocs;
    a.alloc_failures += b.alloc_failures;
    a.translations_checked += b.translations_checked;
    a.tlb_accesses += b.tlb_accesses;
}

fn layouts() -> Vec<Layout> {
    let mut v = std::vec![Layout::Whole];
    for n in 1..=7 {
        v.push(Layout::User { n });
        v.push(Layout::Kernel { n });
        v.push(Layout::UserLow { t1sz: n });
        v.push(Layout::KernelHigh { t1sz: n });
    }
    v
}

fn run_format<F: TestFormat>(name: &str, pa_limit: u64, steps: u64, seed: u64) -> Counts {
    match run_format_with::<F>(pa_limit, steps, seed, false) {
        Ok(c) => c,
        Err(e) => panic!("{name}: {e}"),
    }
}

fn run_format_with<F: TestFormat>(
    pa_limit: u64,
    steps: u64,
    seed: u64,
    broken: bool,
) -> Result<Counts, String> {
    let mut total = Counts::default();
    for (i, layout) in layouts()
        .into_iter()
        .filter(|l| F::layout_usable(*l))
        .enumerate()
    {
        for near_limit in [false, true] {
            let s = seed ^ ((i as u64) << 8) ^ u64::from(near_limit) << 16;
            let mut run = Run::<F>::new(layout, near_limit, s, pa_limit)
                .map_err(|e| format!("{layout:?}: {e}"))?;
            run.broken = broken;
            for step in 0..steps {
                run.step().map_err(|e| {
                    format!("{layout:?} near_limit={near_limit} seed {s:#x} step {step}: {e}")
                })?;
            }
            let c = run
                .finish()
                .map_err(|e| format!("{layout:?} seed {s:#x} teardown: {e}"))?;
            add(&mut total, c);
        }
    }
    Ok(total)
}

#[test]
fn teeth_the_harness_catches_dropped_invalidates() {
    // Not ignored: a short run with every by-VA invalidate dropped must fail.
    assert!(run_format_with::<Short>(1 << 32, 60, 7, true).is_err());
    assert!(run_format_with::<Lpae>(1 << 40, 60, 7, true).is_err());
}

#[test]
#[ignore = "run by `cargo xtask test` (bounded) and `cargo xtask hostile --long`"]
fn hostile_inputs_both_formats_every_layout() {
    let long = std::env::var_os("ARMV7_MM_HOSTILE_LONG").is_some();
    let steps = if long { 2_000 } else { 200 };
    let seed = std::env::var("ARMV7_MM_HOSTILE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x00c0_ffee_u64);
    for (name, c) in [
        ("short", run_format::<Short>("short", 1 << 32, steps, seed)),
        (
            "lpae",
            run_format::<Lpae>("lpae", 1 << 40, steps, seed ^ 0xa5a5),
        ),
    ] {
        println!("hostile {name}: {c:?}");
        assert!(
            c.maps_ok > 0 && c.maps_refused > 0,
            "{name}: maps not exercised"
        );
        assert!(
            c.unmaps_ok > 0 && c.leaves_unmapped > 0,
            "{name}: unmaps not exercised"
        );
        assert!(c.protects_ok > 0, "{name}: protect not exercised");
        assert!(
            c.table_frames_freed > 0,
            "{name}: free_tables freed nothing"
        );
        assert!(c.alloc_failures > 0, "{name}: no allocation failed");
    }
}

//! Host tests of the generic walker, run over both formats: a property test against a
//! reference model with frame accounting (on a whole-space table, and in every layout
//! with maps limited to every size), the seeds it found, failure injection at every
//! allocation, and the attribute rules (executable device memory, global leaves in a
//! user space). The format-specific tests (encodings, sizes, packing numbers) live in
//! `short::tests` and `lpae::tests` and share the helpers here.

use std::collections::BTreeMap;
use std::vec;
use std::vec::Vec;

use proptest::prelude::*;

use super::attrs::{Access, Attributes, Execute, MemoryType};
use super::{AddressSpace, Format, Kind, Layout, Mapping, Word};
use crate::addr::{PhysAddr, VirtAddr, VirtEnd, VirtRange};
use crate::lpae::Lpae;
use crate::memory::Memory;
use crate::short::host::HostMemory;
use crate::short::Short;
use crate::sink::{ClearedLeaf, MapSize, UnmapSink};
use crate::table::error::{MapError, ProtectError, UnmapError};

pub(crate) const KIB: u64 = 1 << 10;
pub(crate) const MIB: u64 = 1 << 20;
pub(crate) const GIB: u64 = 1 << 30;

/// The features tests use per format.
pub(crate) trait TestFormat: Format {
    /// Everything on.
    const ALL: Self::Features;
    /// The least capable CPU the format runs on.
    const BASELINE: Self::Features;
}

impl TestFormat for Short {
    const ALL: Self::Features = crate::short::Features::ALL;
    const BASELINE: Self::Features = crate::short::Features::BASELINE;
}

impl TestFormat for Lpae {
    const ALL: Self::Features = crate::lpae::Features::ALL;
    const BASELINE: Self::Features = crate::lpae::Features::BASELINE;
}

/// Records what the walkers report; `flush` plays the gather: frees table memory after
/// the (imaginary) TLB flush.
#[derive(Default, Debug)]
pub(crate) struct Rec {
    pub leaves: Vec<ClearedLeaf>,
    pub unlinked: Vec<(VirtAddr, u64, bool)>,
    pub freed: Vec<(PhysAddr, usize)>,
    pub changed: Vec<crate::ChangedLeaf>,
    pub flushes_now: usize,
}

impl UnmapSink for Rec {
    fn leaf_cleared(&mut self, leaf: ClearedLeaf) {
        self.leaves.push(leaf);
    }
    fn table_unlinked(&mut self, va: VirtAddr, span: u64, global: bool) {
        self.unlinked.push((va, span, global));
    }
    fn table_memory_freed(&mut self, pa: PhysAddr, frames: usize) {
        self.freed.push((pa, frames));
    }
    fn leaf_changed(&mut self, leaf: crate::ChangedLeaf) {
        self.changed.push(leaf);
    }
    fn flush_now(&mut self) {
        self.flushes_now += 1;
    }
}

impl Rec {
    pub(crate) fn flush(&mut self, mem: &mut HostMemory) {
        for (pa, n) in self.freed.drain(..) {
            mem.free_frames(pa, n);
        }
        self.leaves.clear();
        self.unlinked.clear();
    }
}

pub(crate) fn r(start: u64, len: u64) -> VirtRange {
    VirtRange::from_start_len(VirtAddr::new(start as u32), len).unwrap()
}

pub(crate) fn all() -> VirtRange {
    r(0, 1 << 32)
}

pub(crate) fn whole<F: TestFormat>(mem: &HostMemory) -> AddressSpace<F, HostMemory> {
    AddressSpace::new(mem.clone(), Layout::Whole, F::ALL).unwrap()
}

/// Destroys the space, frees what it reported, and checks no frame is left.
pub(crate) fn teardown<F: Format>(space: AddressSpace<F, HostMemory>, mem: &HostMemory) {
    let mut rec = Rec::default();
    let mut m = space.destroy(&mut rec);
    rec.flush(&mut m);
    assert_eq!(mem.outstanding(), 0, "frames leaked");
}

pub(crate) fn sizes<F: Format>(
    space: &AddressSpace<F, HostMemory>,
    range: VirtRange,
) -> Vec<(u64, MapSize)> {
    space
        .mappings(range)
        .map(|m| (m.va.as_u64(), m.size))
        .collect()
}

/// Bytes one entry at the level whose entries span `span` covers together with the
/// sibling tables sharing a frame below it: the free-tables group of a table unlinked
/// with that span.
fn group_of<F: Format>(span: u64) -> u64 {
    let level = (1..=F::LAST_LEVEL)
        .find(|&l| 1u64 << F::SHIFT[l as usize] == span)
        .expect("a span of some level");
    let child = F::ENTRIES[level as usize + 1] * <F::Word as super::Word>::BYTES;
    span * (4096 / child) as u64
}

/// Maps one kernel-data page (to PA 0x1000) at each of `vas`.
pub(crate) fn map_pages<F: Format, M: Memory>(s: &mut AddressSpace<F, M>, vas: &[u64]) {
    for &va in vas {
        s.map(
            r(va, 4096),
            PhysAddr::new(0x1000),
            Attributes::KERNEL_DATA,
            MapSize::Page4K,
        )
        .unwrap();
    }
}

/// Dense 4 KiB pages at 0x4000_0000 of each `(bytes, table frames)`: exactly those table
/// frames below a root of `root_frames`, every page a mapping; prints the numbers.
pub(crate) fn dense_pages<F: TestFormat>(cases: &[(u64, usize)], root_frames: usize) {
    for &(len, frames) in cases {
        let mem = HostMemory::new();
        let mut s = whole::<F>(&mem);
        s.map(
            r(0x4000_0000, len),
            PhysAddr::new(0x8000_0000),
            Attributes::KERNEL_DATA,
            MapSize::Page4K,
        )
        .unwrap();
        assert_eq!(s.table_frames(), frames);
        assert_eq!(s.table_bytes(), (frames + root_frames) as u64 * 4096);
        assert_eq!(mem.outstanding(), frames + root_frames);
        std::println!(
            "{}: dense {} MiB of 4 KiB pages: {} KiB of tables below a {} KiB root",
            core::any::type_name::<F>(),
            len >> 20,
            frames * 4,
            root_frames * 4
        );
        assert_eq!(s.mappings(all()).count() as u64, len / 4096);
        teardown(s, &mem);
    }
}

/// One page at 0x8000_0000, the whole space walked: the entries read by level, `(l1, l2,
/// l3)` (an empty entry costs one read).
pub(crate) fn walk_counts<F: TestFormat>() -> (u64, u64, u64) {
    let mem = HostMemory::new();
    let mut s = whole::<F>(&mem);
    map_pages(&mut s, &[0x8000_0000]);
    let mut it = s.mappings(all());
    assert_eq!(it.by_ref().count(), 1);
    let c = it.counts();
    teardown(s, &mem);
    (c.l1_reads, c.l2_reads, c.l3_reads)
}

/// The user and kernel halves of every split `n` in 1..=7: the root frames and alignment
/// the format needs (`user_root(n)` gives `(frames, align, table frames for one page)`,
/// `kernel_root` `(frames, align)`), bounds enforced on both sides, user tables reported
/// ASID-tagged, a `block` mapped at the kernel half's start, everything returned.
pub(crate) fn layouts<F: TestFormat>(
    user_root: impl Fn(u8) -> (usize, u64, usize),
    kernel_root: (usize, u64),
    block: MapSize,
) {
    let mem = HostMemory::new();
    for n in 1..=7u8 {
        let mut u = AddressSpace::<F, _>::new(mem.clone(), Layout::User { n }, F::ALL).unwrap();
        let top = (1u64 << 32) >> n;
        let (frames, align, tables) = user_root(n);
        assert_eq!(mem.outstanding(), frames, "n = {n}");
        assert!(u.root().is_aligned(align), "n = {n}");
        u.map(
            r(top - 8192, 8192),
            PhysAddr::new(0x1000),
            Attributes::USER_DATA,
            MapSize::Page4K,
        )
        .unwrap();
        assert_eq!(u.table_frames(), tables, "n = {n}");
        assert_eq!(
            u.map(
                r(top - 4096, 8192),
                PhysAddr::new(0x1000),
                Attributes::USER_DATA,
                MapSize::Page4K
            ),
            Err(MapError::OutOfRange)
        );
        assert!(u.translate(VirtAddr::new(top as u32)).is_none());
        let last = u.translate(VirtAddr::new((top - 4096) as u32)).unwrap();
        assert_eq!(last.pa, PhysAddr::new(0x2000));
        let mut rec = Rec::default();
        u.unmap(r(top - 8192, 8192), &mut rec).unwrap();
        u.free_tables(
            r(0, top),
            VirtRange::floor_ceiling(VirtAddr::new(0), top),
            &mut rec,
        )
        .unwrap();
        assert!(!rec.unlinked[0].2, "user tables are ASID-tagged");
        assert_eq!(u.table_frames(), 0);
        rec.flush(&mut mem.clone());
        teardown(u, &mem);

        let mut k = AddressSpace::<F, _>::new(mem.clone(), Layout::Kernel { n }, F::ALL).unwrap();
        assert_eq!(mem.outstanding(), kernel_root.0);
        assert!(k.root().is_aligned(kernel_root.1));
        let bytes = block.bytes();
        k.map(
            r(top, bytes),
            PhysAddr::new(bytes),
            Attributes::KERNEL_DATA,
            block,
        )
        .unwrap();
        assert_eq!(sizes(&k, all()), [(top, block)]);
        assert_eq!(
            k.map(
                r(top - 4096, 4096),
                PhysAddr::new(0x1000),
                Attributes::KERNEL_DATA,
                MapSize::Page4K
            ),
            Err(MapError::OutOfRange)
        );
        teardown(k, &mem);
    }
    for n in [0, 8] {
        assert!(matches!(
            AddressSpace::<F, _>::new(mem.clone(), Layout::User { n }, F::ALL),
            Err(crate::table::error::CreateError::InvalidSplit(m)) if m == n
        ));
    }
    assert_eq!(mem.outstanding(), 0);
}

// ----- property test against a reference model -----------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Map {
        page: u32,
        pages: u32,
        pa_page: u32,
        /// PA above 4 GiB (`+ 64 GiB`).
        high: bool,
        attrs: Attributes,
        max: MapSize,
    },
    Unmap {
        page: u32,
        pages: u32,
    },
    Protect {
        page: u32,
        pages: u32,
        access: Access,
        execute: Execute,
    },
    FreeTables {
        page: u32,
        pages: u32,
        /// Pages below the range start (saturating: `u32::MAX` is a floor of 0).
        floor_back: u32,
        /// Pages above the range end (clamped: `u32::MAX` is a ceiling of 4 GiB).
        ceil_fwd: u32,
    },
    Translate {
        page: u32,
    },
    /// Map, unmap, protect and free-tables of `pages` pages on each side of the layout's
    /// edge inside the 4 GiB (a `User` space's top, a `Kernel` space's bottom), and a
    /// translate just outside it: all refused or empty, nothing changed. Nothing for
    /// `Whole`.
    Across {
        pages: u32,
    },
}

/// The whole-space model's VA window starts here. Most ops play in its first 64 MiB
/// (sixteen 4 MiB short groups, thirty-two 2 MiB LPAE tables) so they collide; some cover
/// a whole GiB-aligned GiB further up (1 GiB blocks, LPAE level-2 tables freed).
const WIN: u64 = 0x3000_0000;
const DENSE_PAGES: u32 = (64 * MIB / 4096) as u32;
/// Up to 0xc000_0000.
const WIN_PAGES: u32 = ((0xc000_0000 - WIN) / 4096) as u32;
/// Page of the first GiB-aligned GiB (0x4000_0000).
const GIB_PAGE: u32 = ((GIB - WIN) / 4096) as u32;
const GIB_PAGES: u32 = (GIB / 4096) as u32;
/// PA of window page 0: congruent to `WIN` modulo 1 GiB, so blocks of every size fit.
const PA_BASE: u64 = 0x7000_0000;
const PA_HIGH: u64 = 1 << 36;

/// Where a model run plays: a space of some layout and the window of its VAs the ops
/// use. Page numbers in ops count from `base`.
#[derive(Clone, Copy, Debug)]
struct Win {
    layout: Layout,
    base: u64,
    /// Pages of the window (ranges are clipped to its end).
    pages: u32,
    /// Pages at its start where most ops play (so they collide).
    dense: u32,
    /// Window page of its first GiB-aligned GiB, and how many whole ones it has (0 to 2).
    gib: (u32, u32),
    /// PA of window page 0: congruent to `base` modulo 1 GiB, so blocks of every size fit,
    /// and low enough that every window PA is below 4 GiB.
    pa_base: u64,
}

impl Win {
    /// The window of the whole-space runs.
    const WHOLE: Win = Win {
        layout: Layout::Whole,
        base: WIN,
        pages: WIN_PAGES,
        dense: DENSE_PAGES,
        gib: (GIB_PAGE, 2),
        pa_base: PA_BASE,
    };

    /// The window of a layout: its VAs from the bottom, at most 2 GiB of them.
    fn of(layout: Layout) -> Win {
        if layout == Layout::Whole {
            return Self::WHOLE;
        }
        let (lo, hi) = layout.bounds();
        let end = hi.min(lo + 2 * GIB);
        let first_gib = lo.next_multiple_of(GIB);
        let gibs = if end > first_gib {
            ((end - first_gib) / GIB).min(2)
        } else {
            0
        };
        let pages = ((end - lo) / 4096) as u32;
        Win {
            layout,
            base: lo,
            pages,
            dense: pages.min(DENSE_PAGES),
            gib: (((first_gib - lo) / 4096) as u32, gibs as u32),
            pa_base: GIB + lo % GIB,
        }
    }

    fn end(&self) -> u64 {
        self.base + u64::from(self.pages) * 4096
    }

    /// Extents at or above this many pages are mapped aligned with every size allowed
    /// (else a GiB would be a million pages).
    fn big(&self) -> u32 {
        self.pages.min(GIB_PAGES)
    }

    /// `[base + page, base + page + pages)`, clipped to the window.
    fn range(&self, page: u32, pages: u32) -> VirtRange {
        let start = self.base + u64::from(page) * 4096;
        let end = (start + u64::from(pages) * 4096).min(self.end());
        VirtRange::new(VirtAddr::new(start as u32), VirtEnd::new(end).unwrap()).unwrap()
    }

    /// The edge of the layout inside the 4 GiB, if any.
    fn edge(&self) -> Option<u64> {
        match self.layout {
            Layout::Whole => None,
            Layout::User { .. } | Layout::UserLow { .. } => Some(self.layout.bounds().1),
            Layout::Kernel { .. } | Layout::KernelHigh { .. } => Some(self.layout.bounds().0),
        }
    }
}

fn arb_access() -> impl Strategy<Value = Access> {
    prop_oneof![
        Just(Access::KernelRw),
        Just(Access::KernelRo),
        Just(Access::KernelRwUserRo),
        Just(Access::UserRw),
        Just(Access::UserRo),
    ]
}

fn arb_execute() -> impl Strategy<Value = Execute> {
    prop_oneof![
        Just(Execute::Never),
        Just(Execute::Anywhere),
        Just(Execute::UserOnly)
    ]
}

/// Attributes, global with probability `global` (a `User` space refuses global ones:
/// most of its maps should not be).
fn arb_attrs(global: f64) -> impl Strategy<Value = Attributes> {
    (
        prop_oneof![
            Just(MemoryType::NormalWriteBack),
            Just(MemoryType::Device),
            Just(MemoryType::NormalNonCacheable),
            Just(MemoryType::StronglyOrdered),
        ],
        arb_access(),
        arb_execute(),
        proptest::bool::weighted(global),
        any::<bool>(),
    )
        .prop_map(|(memory, access, execute, global, shareable)| Attributes {
            memory,
            access,
            execute,
            global,
            shareable,
        })
}

/// Page counts and alignments in window `w` that make every size likely: mostly in its
/// dense part, sometimes a whole GiB (or, in a window without one, the whole window), or
/// pages in its first GiB.
fn arb_extent(w: Win) -> impl Strategy<Value = (u32, u32)> {
    let (dense, sixteen_m) = (w.dense, (w.pages / 4096).clamp(1, 4));
    let (gib, gibs) = w.gib;
    let high = if gibs > 0 { gib } else { w.pages / 2 };
    prop_oneof![
        8 => (0..dense, 1..40u32),
        8 => (0..dense / 16, 1..40u32).prop_map(|(p, n)| (p * 16, n * 16)),
        8 => (0..dense / 256, 1..6u32).prop_map(|(p, n)| (p * 256, n * 256)),
        8 => (0..sixteen_m, 1..3u32).prop_map(|(p, n)| (p * 4096, n * 4096)),
        2 => (0..gibs.max(1)).prop_map(move |g| if gibs > 0 {
            (gib + g * GIB_PAGES, GIB_PAGES)
        } else {
            (0, w.pages)
        }),
        2 => (0..64u32, 1..40u32).prop_map(move |(p, n)| (high + p * 16, n)),
    ]
}

fn arb_bound() -> impl Strategy<Value = u32> {
    prop_oneof![4 => 0..2048u32, 1 => Just(u32::MAX)]
}

/// Every size a map may be limited to.
const ALL_SIZES: [MapSize; 6] = [
    MapSize::Page4K,
    MapSize::Large64K,
    MapSize::Section1M,
    MapSize::Block2M,
    MapSize::Super16M,
    MapSize::Block1G,
];

fn arb_op(w: Win) -> impl Strategy<Value = Op> {
    let global = if w.layout.is_user() { 0.2 } else { 0.5 };
    prop_oneof![
        4 => (arb_extent(w), any::<bool>(), 0..8u32, arb_attrs(global),
              proptest::sample::select(&ALL_SIZES[..]))
            .prop_map(move |((page, pages), same_align, high, attrs, max)| {
                let gib = pages >= w.big();
                Op::Map {
                    page,
                    pages,
                    // Same alignment as the VA (blocks possible) or off by one page; a
                    // whole GiB always aligned, with every size allowed (else a million
                    // pages).
                    pa_page: if same_align || gib { page } else { page + 1 },
                    high: high == 0,
                    attrs,
                    max: if gib { MapSize::Block1G } else { max },
                }
            }),
        3 => arb_extent(w).prop_map(|(page, pages)| Op::Unmap { page, pages }),
        1 => (arb_extent(w), arb_access(), arb_execute())
            .prop_map(|((page, pages), access, execute)| Op::Protect { page, pages, access, execute }),
        2 => (arb_extent(w), arb_bound(), arb_bound())
            .prop_map(|((page, pages), floor_back, ceil_fwd)| Op::FreeTables { page, pages, floor_back, ceil_fwd }),
        2 => prop_oneof![0..w.dense, 0..w.pages].prop_map(|page| Op::Translate { page }),
        1 => prop_oneof![1..40u32, Just(4096u32)].prop_map(|pages| Op::Across { pages }),
    ]
}

/// Model: leaf mappings by first VA.
type Model = BTreeMap<u64, Mapping>;

fn model_leaf(m: &Model, va: u64) -> Option<Mapping> {
    let (_, l) = m.range(..=va).next_back()?;
    (va < l.end()).then_some(*l)
}

fn check_against_model<F: Format>(s: &AddressSpace<F, HostMemory>, model: &Model) {
    let got: Vec<Mapping> = s.mappings(all()).collect();
    let want: Vec<Mapping> = model.values().copied().collect();
    assert_eq!(got, want);
}

/// Runs `ops` on a table of format `F` with `w`'s layout next to the model, checking after
/// each op: the mappings equal the model's, a map tiles its range with leaves the format
/// and the layout's root can hold, refused ops changed no entry and kept no frame (and
/// were refused for a reason the model sees), free-tables freed exactly the eligible
/// empty groups (after the sink's flush only), and the frames out are exactly the table
/// frames the space counts; teardown returns all.
fn run_ops<F: TestFormat>(w: Win, ops: &[Op], features: F::Features) {
    let mem = HostMemory::new();
    let mut s = AddressSpace::<F, _>::new(mem.clone(), w.layout, features).unwrap();
    let user = w.layout.is_user();
    let root_level = F::root(w.layout).level;
    let (lo, hi) = w.layout.bounds();
    let mut model = Model::new();
    let mut rec = Rec::default();
    for op in ops {
        let before = s.snapshot();
        let before_out = mem.outstanding();
        match *op {
            Op::Map {
                page,
                pages,
                pa_page,
                high,
                attrs,
                max,
            } => {
                let range = w.range(page, pages);
                let pa = w.pa_base + u64::from(pa_page) * 4096 + if high { PA_HIGH } else { 0 };
                let overlap = model.values().any(|m| {
                    m.va.as_u64() < range.end().as_u64() && m.end() > range.start().as_u64()
                });
                let encodable = F::check_permissions(&features, attrs.access, attrs.execute);
                let exec_device = !attrs.memory.is_normal() && attrs.execute != Execute::Never;
                let global_in_user = user && attrs.global;
                match s.map(range, PhysAddr::new(pa), attrs, max) {
                    Ok(()) => {
                        assert!(!overlap, "map over a mapping succeeded");
                        assert!(encodable.is_ok(), "unencodable attributes mapped");
                        assert!(!exec_device, "executable device memory mapped");
                        assert!(!global_in_user, "a global leaf in a user space");
                        let new: Vec<Mapping> = s.mappings(range).collect();
                        // They tile the range exactly, in order, with the intent's PA and
                        // attributes, and at most `max`.
                        let mut at = range.start().as_u64();
                        for m in &new {
                            assert_eq!(m.va.as_u64(), at);
                            assert_eq!(m.pa.as_u64(), pa + (at - range.start().as_u64()));
                            assert!(m.size <= max);
                            assert!(
                                F::LEAVES
                                    .iter()
                                    .any(|l| l.size == m.size && l.level >= root_level),
                                "{:?} in a {:?} space",
                                m.size,
                                w.layout
                            );
                            assert_eq!(m.va.as_u64() % m.size.bytes(), 0);
                            assert_eq!(m.attrs, attrs);
                            at += m.size.bytes();
                            model.insert(m.va.as_u64(), *m);
                        }
                        assert_eq!(at, range.end().as_u64());
                    }
                    Err(e) => {
                        match e {
                            MapError::AlreadyMapped(va) => {
                                assert!(overlap);
                                assert!(model_leaf(&model, va.as_u64()).is_some());
                            }
                            MapError::PxnConflict(_) => {}
                            MapError::Unsupported(_) => assert!(encodable.is_err()),
                            MapError::ExecutableDevice => assert!(exec_device),
                            MapError::GlobalInUserSpace => assert!(global_in_user),
                            MapError::PhysUnreachable(_) => assert!(high),
                            e => panic!("unexpected {e:?}"),
                        }
                        assert!(s.snapshot() == before, "refused map changed the tables");
                        assert_eq!(mem.outstanding(), before_out);
                    }
                }
            }
            Op::Unmap { page, pages } => {
                let range = w.range(page, pages);
                let (a, b) = (range.start().as_u64(), range.end().as_u64());
                let straddle = model
                    .values()
                    .find(|m| {
                        m.va.as_u64() < b && m.end() > a && (m.va.as_u64() < a || m.end() > b)
                    })
                    .copied();
                match s.unmap(range, &mut rec) {
                    Ok(n) => {
                        assert!(straddle.is_none());
                        let gone: Vec<Mapping> = model.range(a..b).map(|(_, m)| *m).collect();
                        assert_eq!(n, gone.len());
                        let reported: Vec<ClearedLeaf> = rec.leaves.drain(..).collect();
                        assert_eq!(reported.len(), gone.len());
                        for (l, m) in reported.iter().zip(&gone) {
                            assert_eq!((l.va, l.size, l.pa), (m.va, m.size, m.pa));
                            assert_eq!(l.global, m.attrs.global);
                            assert_eq!(l.executable, m.attrs.execute != Execute::Never);
                            model.remove(&m.va.as_u64());
                        }
                    }
                    Err(UnmapError::PartialBlock { va, size }) => {
                        let m = straddle.expect("refused without a straddling block");
                        assert_eq!((va, size), (m.va, m.size));
                        assert!(rec.leaves.is_empty());
                        assert!(s.snapshot() == before, "refused unmap changed the tables");
                    }
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
            Op::Protect {
                page,
                pages,
                access,
                execute,
            } => {
                let range = w.range(page, pages);
                let (a, b) = (range.start().as_u64(), range.end().as_u64());
                // The first leaf of the range (wholly inside it: a straddling block is
                // refused first) that the new permissions would make executable device
                // memory.
                let exec_device = model
                    .range(a..b)
                    .map(|(_, m)| m)
                    .find(|m| !m.attrs.memory.is_normal() && execute != Execute::Never)
                    .map(|m| m.va);
                let mut reports = Rec::default();
                match s.protect(range, access, execute, &mut reports) {
                    Ok(changed) => {
                        assert_eq!(exec_device, None, "device memory made executable");
                        // Every leaf whose permissions change is reported once, in VA
                        // order, with the flags its invalidate depends on; the others
                        // are not.
                        let mut want = Vec::new();
                        let mut replicated = 0;
                        for m in model.range_mut(a..b).map(|(_, m)| m) {
                            let new = m.attrs.with_permissions(access, execute);
                            if new != m.attrs {
                                want.push(crate::ChangedLeaf {
                                    va: m.va,
                                    size: m.size,
                                    global: m.attrs.global,
                                    executable: m.attrs.execute != Execute::Never
                                        || new.execute != Execute::Never,
                                });
                                replicated += usize::from(F::shape(m.size).copies > 1);
                            }
                            m.attrs = new;
                        }
                        assert_eq!(reports.changed, want);
                        match (changed, want.first(), want.last()) {
                            (None, None, None) => {}
                            (Some(c), Some(f), Some(l)) => {
                                assert_eq!(c.span.start(), f.va);
                                assert_eq!(c.span.end().as_u64(), l.va.as_u64() + l.size.bytes());
                                assert_eq!(c.leaves, want.len());
                                assert_eq!(c.replicated, replicated);
                                assert_eq!(c.split, 0);
                                assert_eq!(c.global, want.iter().any(|l| l.global));
                                assert_eq!(c.executable, want.iter().any(|l| l.executable));
                            }
                            (c, _, _) => {
                                panic!("protect returned {c:?} for {} changes", want.len())
                            }
                        }
                    }
                    Err(e) => {
                        if let ProtectError::ExecutableDevice(va) = e {
                            assert_eq!(Some(va), exec_device);
                        }
                        assert!(
                            s.snapshot() == before,
                            "a refused protect changed the tables"
                        );
                    }
                }
            }
            Op::FreeTables {
                page,
                pages,
                floor_back,
                ceil_fwd,
            } => {
                let range = w.range(page, pages);
                let floor = range
                    .start()
                    .as_u64()
                    .saturating_sub(u64::from(floor_back) * 4096);
                let ceiling = (range.end().as_u64() + u64::from(ceil_fwd) * 4096).min(1 << 32);
                let frames = s.table_frames();
                let n = s
                    .free_tables(
                        range,
                        VirtRange::floor_ceiling(VirtAddr::new(floor as u32), ceiling),
                        &mut rec,
                    )
                    .unwrap();
                // VAs outside the layout count as unused: bounds at its edges reach past.
                let floor = if floor <= lo { 0 } else { floor };
                let ceiling = if ceiling >= hi { 1 << 32 } else { ceiling };
                assert_eq!(s.table_frames(), frames - n);
                assert_eq!(rec.freed.len(), n);
                for &(pa, frames) in &rec.freed {
                    assert_eq!(frames, 1);
                    assert!(mem.is_allocated(pa), "table frame freed before the flush");
                }
                // Each unlinked table's group was inside [floor, ceiling), touched the
                // range, and had no mapping left.
                for &(va, span, global) in &rec.unlinked {
                    let group = group_of::<F>(span);
                    let g = va.as_u64() & !(group - 1);
                    assert_eq!(global, !user, "only a user space's tables are not global");
                    assert!(g >= floor && g + group <= ceiling);
                    assert!(g < range.end().as_u64() && g + group > range.start().as_u64());
                    assert!(model
                        .range(va.as_u64()..va.as_u64() + span)
                        .next()
                        .is_none());
                }
                // And every eligible group was freed: a table left whose group is inside
                // the bounds and touches the range has a valid entry in its group.
                let snap = s.snapshot();
                for &(level, e, raw) in &snap {
                    if F::kind(&features, level, F::Word::from_u64(raw)) != Kind::Table {
                        continue;
                    }
                    let group = group_of::<F>(1 << F::SHIFT[level as usize]);
                    let g = e & !(group - 1);
                    if g < floor || g + group > ceiling {
                        continue;
                    }
                    if g >= range.end().as_u64() || g + group <= range.start().as_u64() {
                        continue;
                    }
                    assert!(
                        snap.iter().any(|&(l, va, raw)| l == level + 1
                            && (g..g + group).contains(&va)
                            && raw & F::VALID_MASK != 0),
                        "empty group {g:#x} at level {} kept",
                        level + 1
                    );
                }
                rec.flush(&mut mem.clone());
            }
            Op::Translate { page } => {
                let va = w.base + u64::from(page) * 4096 + 0x123;
                let t = s.translate(VirtAddr::new(va as u32));
                let m = model_leaf(&model, va);
                assert_eq!(t.map(|t| t.mapping), m);
                if let (Some(t), Some(m)) = (t, m) {
                    assert_eq!(t.pa.as_u64(), m.pa.as_u64() + (va - m.va.as_u64()));
                }
                // The fast path agrees with the model on PA, access and size.
                let fast = s.lookup(VirtAddr::new(va as u32));
                assert_eq!(
                    fast.map(|l| (l.pa, l.access, l.size)),
                    t.map(|t| (t.pa, t.mapping.attrs.access, t.mapping.size))
                );
            }
            Op::Across { pages } => {
                let Some(edge) = w.edge() else { continue };
                let len = u64::from(pages) * 4096;
                let start = edge.saturating_sub(len);
                let range = VirtRange::new(
                    VirtAddr::new(start as u32),
                    VirtEnd::new(edge + len).unwrap(),
                )
                .unwrap();
                let pa = PhysAddr::new(0x1000_0000);
                let attrs = Attributes::USER_DATA;
                for max in ALL_SIZES {
                    assert_eq!(s.map(range, pa, attrs, max), Err(MapError::OutOfRange));
                }
                assert_eq!(s.unmap(range, &mut rec), Err(UnmapError::OutOfRange));
                assert_eq!(
                    s.protect(range, Access::UserRo, Execute::Never, &mut Rec::default()),
                    Err(ProtectError::OutOfRange)
                );
                assert_eq!(
                    s.free_tables(range, VirtRange::ALL, &mut rec),
                    Err(crate::table::error::FreeTablesError::OutOfRange)
                );
                let outside = if edge == hi { edge } else { edge - 4096 };
                assert_eq!(s.translate(VirtAddr::new(outside as u32)), None);
                assert_eq!(s.lookup(VirtAddr::new(outside as u32)), None);
                assert!(rec.leaves.is_empty() && rec.unlinked.is_empty() && rec.freed.is_empty());
                assert!(s.snapshot() == before, "refused ops changed the tables");
                assert_eq!(mem.outstanding(), before_out);
            }
        }
        check_against_model(&s, &model);
        // Frame accounting: the root and the linked table frames are exactly what is out.
        assert_eq!(mem.outstanding() as u64 * 4096, s.table_bytes());
    }
    // Teardown returns every frame.
    let mut m = s.destroy(&mut rec);
    rec.flush(&mut m);
    assert_eq!(mem.outstanding(), 0);
}

/// `UserOnly` turned into `Anywhere` (CPUs without PXN).
fn without_pxn(ops: Vec<Op>) -> Vec<Op> {
    ops.into_iter()
        .map(|op| match op {
            Op::Map {
                page,
                pages,
                pa_page,
                high,
                mut attrs,
                max,
            } => {
                if attrs.execute == Execute::UserOnly {
                    attrs.execute = Execute::Anywhere;
                }
                Op::Map {
                    page,
                    pages,
                    pa_page,
                    high,
                    attrs,
                    max,
                }
            }
            op => op,
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn short_random_ops_match_the_model(ops in proptest::collection::vec(arb_op(Win::WHOLE), 1..60)) {
        run_ops::<Short>(Win::WHOLE, &ops, Short::ALL);
    }

    #[test]
    fn short_random_ops_match_the_model_baseline(ops in proptest::collection::vec(arb_op(Win::WHOLE), 1..40)) {
        run_ops::<Short>(Win::WHOLE, &without_pxn(ops), Short::BASELINE);
    }

    #[test]
    fn lpae_random_ops_match_the_model(ops in proptest::collection::vec(arb_op(Win::WHOLE), 1..60)) {
        run_ops::<Lpae>(Win::WHOLE, &ops, Lpae::ALL);
    }

    #[test]
    fn lpae_random_ops_match_the_model_non_coherent(ops in proptest::collection::vec(arb_op(Win::WHOLE), 1..40)) {
        run_ops::<Lpae>(Win::WHOLE, &ops, Lpae::BASELINE);
    }
}

/// The layouts the model runs cover: the whole space; user halves whose roots differ
/// (LPAE: level 1 for `n = 1`, level 2 below, the smallest for `n = 7`; short: roots of
/// one to four frames); kernel halves, whose LPAE root entries span VAs below the split;
/// LPAE's `T1SZ` splits (a process below, the kernel's level-1 or level-2 root at the top;
/// a format without them skips them).
const LAYOUTS: [Layout; 13] = [
    Layout::Whole,
    Layout::User { n: 1 },
    Layout::User { n: 2 },
    Layout::User { n: 3 },
    Layout::User { n: 7 },
    Layout::Kernel { n: 1 },
    Layout::Kernel { n: 2 },
    Layout::Kernel { n: 7 },
    Layout::UserLow { t1sz: 1 },
    Layout::UserLow { t1sz: 2 },
    Layout::KernelHigh { t1sz: 1 },
    Layout::KernelHigh { t1sz: 2 },
    Layout::KernelHigh { t1sz: 7 },
];

/// `cases` random op sequences in each of [`LAYOUTS`] for format `F`, every map limited
/// to a random one of all six sizes (those the format or the layout's root lacks
/// included); a failure names the layout and the shrunk ops.
fn random_ops_in_every_layout<F: TestFormat>(features: F::Features, cases: u32) {
    use proptest::test_runner::{Config, TestRunner};
    for layout in LAYOUTS.into_iter().filter(|l| F::layout_usable(*l)) {
        let w = Win::of(layout);
        let config = Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        };
        let ops = proptest::collection::vec(arb_op(w), 1..30);
        let result = TestRunner::new(config).run(&ops, |ops| {
            run_ops::<F>(w, &ops, features);
            Ok(())
        });
        if let Err(e) = result {
            panic!("{layout:?}: {e}");
        }
    }
}

#[test]
fn short_random_ops_in_every_layout() {
    random_ops_in_every_layout::<Short>(Short::ALL, 16);
}

#[test]
fn lpae_random_ops_in_every_layout() {
    random_ops_in_every_layout::<Lpae>(Lpae::ALL, 16);
}

/// For each layout and each size: a map limited to it over an aligned extent (four
/// leaves of it, or the window's first whole GiB for 1 GiB), the model's checks on it,
/// translates inside each 2 MiB of the start, a map over it, protect, a partial and a whole
/// unmap, free-tables over the window, the refusals (executable device memory, global
/// leaves in a user space, ranges across the layout's edge). Deterministic, for both
/// formats, on the most and the least capable CPU.
fn every_size_in_every_layout<F: TestFormat>() {
    for layout in LAYOUTS.into_iter().filter(|l| F::layout_usable(*l)) {
        let w = Win::of(layout);
        let user = layout.is_user();
        let (gib, gibs) = w.gib;
        let page0 = if gibs > 0 { gib } else { 0 };
        let data = Attributes {
            global: !user,
            ..Attributes::KERNEL_DATA
        };
        let map = |page, pages, attrs, max| Op::Map {
            page,
            pages,
            pa_page: page,
            high: false,
            attrs,
            max,
        };
        for max in ALL_SIZES {
            let pages = ((max.bytes() / 4096) as u32).saturating_mul(4).min(w.big());
            let mut ops = vec![map(page0, pages, data, max)];
            ops.extend((0..4).map(|k| Op::Translate {
                page: page0 + (k * 512 + 1).min(pages - 1),
            }));
            ops.extend([
                map(page0 + pages - 1, 1, data, max),
                Op::Protect {
                    page: page0,
                    pages,
                    access: Access::UserRo,
                    execute: Execute::Never,
                },
                Op::Unmap {
                    page: page0 + 1,
                    pages: 1,
                },
                Op::Unmap { page: page0, pages },
                Op::FreeTables {
                    page: 0,
                    pages: w.pages,
                    floor_back: u32::MAX,
                    ceil_fwd: u32::MAX,
                },
                map(
                    page0,
                    pages,
                    Attributes {
                        execute: Execute::Anywhere,
                        global: !user,
                        ..Attributes::DEVICE
                    },
                    max,
                ),
                map(
                    page0,
                    pages,
                    Attributes {
                        global: true,
                        ..Attributes::USER_DATA
                    },
                    max,
                ),
                Op::Across { pages: 1 },
            ]);
            run_ops::<F>(w, &ops, F::ALL);
            run_ops::<F>(w, &ops, F::BASELINE);
        }
    }
}

#[test]
fn every_size_in_every_layout_short() {
    every_size_in_every_layout::<Short>();
}

#[test]
fn every_size_in_every_layout_lpae() {
    every_size_in_every_layout::<Lpae>();
}

/// The cases proptest found while the walkers were mutation-tested (formerly seeds in
/// `proptest-regressions/short/tests.txt`), as explicit op lists, for both formats.
fn seed_cases() -> Vec<Vec<Op>> {
    let data = Attributes {
        memory: MemoryType::NormalWriteBack,
        access: Access::KernelRw,
        execute: Execute::Never,
        global: false,
        shareable: false,
    };
    let map = |page, pages, pa_page, max| Op::Map {
        page,
        pages,
        pa_page,
        high: false,
        attrs: data,
        max,
    };
    vec![
        vec![map(0, 16, 0, MapSize::Large64K)],
        vec![
            map(9472, 1024, 9473, MapSize::Page4K),
            Op::Unmap {
                page: 8192,
                pages: 4096,
            },
            Op::FreeTables {
                page: 9477,
                pages: 1,
                floor_back: 0,
                ceil_fwd: 762,
            },
        ],
        vec![
            map(8192, 4096, 8193, MapSize::Page4K),
            Op::Unmap {
                page: 4096,
                pages: 8192,
            },
            Op::FreeTables {
                page: 8590,
                pages: 1,
                floor_back: 0,
                ceil_fwd: 625,
            },
        ],
        // A GiB of blocks next to pages in the GiB below, then everything freed.
        vec![
            map(GIB_PAGE, GIB_PAGES, GIB_PAGE, MapSize::Block1G),
            map(GIB_PAGE - 600, 40, GIB_PAGE - 600, MapSize::Block1G),
            Op::Unmap {
                page: 0,
                pages: WIN_PAGES,
            },
            Op::FreeTables {
                page: 0,
                pages: WIN_PAGES,
                floor_back: u32::MAX,
                ceil_fwd: u32::MAX,
            },
        ],
        // Found with protect's device check removed: a GiB of execute-never device memory
        // made executable.
        vec![
            Op::Map {
                page: GIB_PAGE,
                pages: GIB_PAGES,
                pa_page: GIB_PAGE,
                high: true,
                attrs: Attributes {
                    memory: MemoryType::Device,
                    ..data
                },
                max: MapSize::Block1G,
            },
            Op::Protect {
                page: GIB_PAGE,
                pages: GIB_PAGES,
                access: Access::KernelRw,
                execute: Execute::Anywhere,
            },
        ],
    ]
}

#[test]
fn seed_cases_short() {
    for ops in seed_cases() {
        run_ops::<Short>(Win::WHOLE, &ops, Short::ALL);
        run_ops::<Short>(Win::WHOLE, &ops, Short::BASELINE);
    }
}

#[test]
fn seed_cases_lpae() {
    for ops in seed_cases() {
        run_ops::<Lpae>(Win::WHOLE, &ops, Lpae::ALL);
    }
}

// ----- failure injection ------------------------------------------------------------------

/// A map needing `k` new table frames, failed at every allocation 1..=k: the tables and the
/// allocator are exactly as before each time; then it succeeds. `setup` builds the
/// existing tables, `range`/`pa` is the map; returns `k`.
fn fail_at_every_allocation<F: TestFormat>(
    setup: impl Fn(&HostMemory) -> AddressSpace<F, HostMemory>,
    range: VirtRange,
    pa: PhysAddr,
) -> usize {
    let attrs = Attributes::KERNEL_DATA;
    // How many frames does it need? Count on a copy of the situation.
    let need = {
        let m2 = HostMemory::new();
        let mut s2 = setup(&m2);
        let f0 = s2.table_frames();
        s2.map(range, pa, attrs, MapSize::Block1G).unwrap();
        let n = s2.table_frames() - f0;
        teardown(s2, &m2);
        n
    };
    let mem = HostMemory::new();
    let mut s = setup(&mem);
    let before = s.snapshot();
    let before_out = mem.outstanding();
    let frames_before = s.table_frames();
    for n in 1..=need as u64 {
        mem.fail_nth(Some(n));
        assert_eq!(
            s.map(range, pa, attrs, MapSize::Block1G),
            Err(MapError::OutOfMemory),
            "n = {n}"
        );
        mem.fail_nth(None);
        assert_eq!(mem.outstanding(), before_out, "n = {n}: frames kept");
        assert_eq!(s.table_frames(), frames_before);
        assert_eq!(s.snapshot(), before, "n = {n}: tables changed");
    }
    mem.fail_nth(Some(need as u64 + 1));
    s.map(range, pa, attrs, MapSize::Block1G).unwrap();
    mem.fail_nth(None);
    assert_eq!(s.table_frames(), frames_before + need);
    assert_eq!(
        s.mappings(range).count() as u64,
        range.page_count(),
        "all pages (PA not aligned with VA beyond 4 KiB)"
    );
    teardown(s, &mem);
    need
}

/// Existing tables: pages just outside both ends of the big map (sharing its first and
/// last tables), and two empty tables in the middle (frames linked, slots empty).
fn failure_setup<F: TestFormat>(mem: &HostMemory) -> AddressSpace<F, HostMemory> {
    let mut s = whole::<F>(mem);
    let mut rec = Rec::default();
    map_pages(
        &mut s,
        &[0x1010_0000, 0x17f0_0000, 0x1400_0000, 0x1550_0000],
    );
    s.unmap(r(0x1400_0000, 4096), &mut rec).unwrap();
    s.unmap(r(0x1550_0000, 4096), &mut rec).unwrap();
    s
}

#[test]
fn map_failing_at_every_allocation_loses_nothing() {
    // About 126 MiB with the PA 4 KiB off the VA's alignment: small pages everywhere.
    let range = r(0x1011_0000, 0x17f0_0000 - 0x1011_0000);
    let pa = PhysAddr::new(0x4000_1000);
    let short = fail_at_every_allocation::<Short>(failure_setup, range, pa);
    assert_eq!(
        short,
        32 - 4,
        "short: one frame per 4 MiB group without one"
    );
    let lpae = fail_at_every_allocation::<Lpae>(failure_setup, range, pa);
    assert_eq!(
        lpae,
        64 - 4,
        "lpae: one level-3 table per 2 MiB without one"
    );
    // In a GiB with no table yet, LPAE needs the level-2 table as well.
    let range = r(0x4000_0000, 5 * MIB);
    let lpae = fail_at_every_allocation::<Lpae>(whole::<Lpae>, range, pa);
    assert_eq!(
        lpae,
        1 + 3,
        "lpae: a level-2 table and three level-3 tables"
    );
}

// ----- attribute rules --------------------------------------------------------------------

/// Device and strongly-ordered memory executable at some level, in every layout: refused
/// before anything is written (the range would need new tables: none is taken), while the
/// same memory execute-never maps.
fn executable_device_refused<F: TestFormat>() {
    let mem = HostMemory::new();
    for layout in [
        Layout::Whole,
        Layout::User { n: 1 },
        Layout::Kernel { n: 1 },
    ] {
        let user = layout.is_user();
        let mut s = AddressSpace::<F, _>::new(mem.clone(), layout, F::ALL).unwrap();
        let base = layout.bounds().0;
        // Something mapped already, so the refusals below have tables to leave alone.
        let normal = Attributes {
            global: !user,
            ..Attributes::KERNEL_DATA
        };
        s.map(
            r(base, 4096),
            PhysAddr::new(0x1000),
            normal,
            MapSize::Page4K,
        )
        .unwrap();
        for memory in [MemoryType::Device, MemoryType::StronglyOrdered] {
            let before = s.snapshot();
            let out = mem.outstanding();
            for execute in [Execute::Anywhere, Execute::UserOnly] {
                let attrs = Attributes {
                    memory,
                    execute,
                    global: !user,
                    ..Attributes::DEVICE
                };
                // Pages next to the existing one (its table), pages in a region without a
                // table (frames it would take), and a block.
                for (va, len, max) in [
                    (base + 4096, 8192, MapSize::Page4K),
                    (base + 64 * MIB, 64 * KIB, MapSize::Page4K),
                    (base + 32 * MIB, 16 * MIB, MapSize::Block1G),
                ] {
                    let got = s.map(r(va, len), PhysAddr::new(0x2000_0000), attrs, max);
                    assert_eq!(got, Err(MapError::ExecutableDevice), "{layout:?} {attrs:?}");
                    assert!(s.snapshot() == before, "a refused map changed the tables");
                    assert_eq!(mem.outstanding(), out, "a refused map kept a frame");
                }
            }
            let xn = Attributes {
                memory,
                global: !user,
                ..Attributes::DEVICE
            };
            let va = base + 64 * MIB + (memory.remap_index() as u64) * MIB;
            s.map(r(va, 8192), PhysAddr::new(0x2000_0000), xn, MapSize::Page4K)
                .unwrap();
            assert_eq!(
                s.translate(VirtAddr::new(va as u32)).unwrap().mapping.attrs,
                xn
            );
        }
        teardown(s, &mem);
    }
}

#[test]
fn executable_device_refused_short() {
    executable_device_refused::<Short>();
}

#[test]
fn executable_device_refused_lpae() {
    executable_device_refused::<Lpae>();
}

/// Global leaves in a `User` layout are refused before anything is written; `Whole` and
/// `Kernel` spaces take them, and a `User` space takes the same mapping not global.
fn global_in_user_space_refused<F: TestFormat>() {
    let mem = HostMemory::new();
    for n in [1, 2, 7] {
        let mut s = AddressSpace::<F, _>::new(mem.clone(), Layout::User { n }, F::ALL).unwrap();
        map_user_page(&mut s, 0);
        let before = s.snapshot();
        let out = mem.outstanding();
        let top = Layout::User { n }.bounds().1;
        for attrs in [
            Attributes::KERNEL_DATA,
            Attributes::KERNEL_IMAGE,
            Attributes::DEVICE,
            Attributes {
                global: true,
                ..Attributes::USER_DATA
            },
        ] {
            for (va, len, max) in [
                (4096, 8192, MapSize::Page4K),
                (top - 4 * MIB, 4 * MIB, MapSize::Block1G),
                (top - 16 * MIB, 64 * KIB, MapSize::Large64K),
            ] {
                let got = s.map(r(va, len), PhysAddr::new(0x1000_0000), attrs, max);
                assert_eq!(got, Err(MapError::GlobalInUserSpace), "n = {n}, {attrs:?}");
                assert!(s.snapshot() == before, "a refused map changed the tables");
                assert_eq!(mem.outstanding(), out, "a refused map kept a frame");
            }
        }
        let local = Attributes {
            global: false,
            ..Attributes::KERNEL_DATA
        };
        s.map(
            r(4096, 8192),
            PhysAddr::new(0x1000_0000),
            local,
            MapSize::Page4K,
        )
        .unwrap();
        teardown(s, &mem);
    }
    for layout in [Layout::Whole, Layout::Kernel { n: 1 }] {
        let mut s = AddressSpace::<F, _>::new(mem.clone(), layout, F::ALL).unwrap();
        let va = layout.bounds().0;
        s.map(
            r(va, 8192),
            PhysAddr::new(0x1000_0000),
            Attributes::KERNEL_DATA,
            MapSize::Page4K,
        )
        .unwrap();
        assert!(
            s.translate(VirtAddr::new(va as u32))
                .unwrap()
                .mapping
                .attrs
                .global
        );
        teardown(s, &mem);
    }
}

/// One not-global user page at `va`.
fn map_user_page<F: Format, M: Memory>(s: &mut AddressSpace<F, M>, va: u64) {
    s.map(
        r(va, 4096),
        PhysAddr::new(0x1000),
        Attributes::USER_DATA,
        MapSize::Page4K,
    )
    .unwrap();
}

#[test]
fn global_in_user_space_refused_short() {
    global_in_user_space_refused::<Short>();
}

#[test]
fn global_in_user_space_refused_lpae() {
    global_in_user_space_refused::<Lpae>();
}

/// `protect` cannot make device or strongly-ordered memory executable: refused, naming
/// the first such leaf, before any leaf of the range (normal memory included) changes;
/// execute-never permission changes on device memory and executable normal memory next
/// to it still work.
fn protect_keeps_device_execute_never<F: TestFormat>() {
    let mem = HostMemory::new();
    let mut s = whole::<F>(&mem);
    let ram = 0x1000_0000;
    let dev = ram + 8192;
    let so = 0x1020_0000;
    s.map(
        r(ram, 8192),
        PhysAddr::new(0x4000_0000),
        Attributes::KERNEL_DATA,
        MapSize::Page4K,
    )
    .unwrap();
    s.map(
        r(dev, 4096),
        PhysAddr::new(0x2000_0000),
        Attributes::DEVICE,
        MapSize::Page4K,
    )
    .unwrap();
    let so_attrs = Attributes {
        memory: MemoryType::StronglyOrdered,
        ..Attributes::DEVICE
    };
    // A block: the check covers leaves of every size.
    s.map(
        r(so, 2 * MIB),
        PhysAddr::new(0x2020_0000),
        so_attrs,
        MapSize::Block2M,
    )
    .unwrap();
    let before = s.snapshot();
    for execute in [Execute::Anywhere, Execute::UserOnly] {
        for (range, first) in [
            (r(ram, 3 * 4096), dev),
            (r(dev, 4096), dev),
            (r(so, 2 * MIB), so),
            (r(ram + 4096, so + 2 * MIB - ram - 4096), dev),
            (r(dev, so + 2 * MIB - dev), dev),
        ] {
            if execute == Execute::UserOnly && range.start().as_u64() < dev {
                // Short-descriptor pages: their table has PXN clear, a conflict found
                // first.
                continue;
            }
            assert_eq!(
                s.protect(range, Access::KernelRo, execute, &mut Rec::default()),
                Err(ProtectError::ExecutableDevice(VirtAddr::new(first as u32))),
                "{range:?} {execute:?}"
            );
            assert!(
                s.snapshot() == before,
                "a refused protect changed the tables"
            );
        }
    }
    let all_of_it = r(ram, so + 2 * MIB - ram);
    let ro = s
        .protect(
            all_of_it,
            Access::KernelRo,
            Execute::Never,
            &mut Rec::default(),
        )
        .unwrap()
        .expect("changed");
    assert_eq!(ro.leaves, s.mappings(all_of_it).count());
    for va in [ram, dev, so] {
        let a = s.translate(VirtAddr::new(va as u32)).unwrap().mapping.attrs;
        assert_eq!((a.access, a.execute), (Access::KernelRo, Execute::Never));
    }
    assert!(s
        .protect(
            r(ram, 8192),
            Access::KernelRw,
            Execute::Anywhere,
            &mut Rec::default()
        )
        .unwrap()
        .is_some());
    teardown(s, &mem);
}

#[test]
fn protect_keeps_device_execute_never_short() {
    protect_keeps_device_execute_never::<Short>();
}

#[test]
fn protect_keeps_device_execute_never_lpae() {
    protect_keeps_device_execute_never::<Lpae>();
}

/// Aliases of one frame with different attributes, side by side in one `protect`: each
/// leaf gets the permissions applied to its own attributes (memory type, global-ness), and
/// only the leaves that change are reported. Guards `Protector`'s memo of its last decision,
/// which must be keyed on the attribute bits, not the output address the aliases share.
fn protect_decides_each_alias_by_its_own_attributes<F: TestFormat>() {
    let mem = HostMemory::new();
    let mut s = whole::<F>(&mem);
    let va = 0x1000_0000;
    let frame = PhysAddr::new(0x4000_0000);
    let aliases = [
        Attributes::KERNEL_DATA,
        Attributes {
            access: Access::KernelRo,
            ..Attributes::KERNEL_DATA
        },
        Attributes::DEVICE,
        Attributes::KERNEL_DATA,
        Attributes {
            global: false,
            ..Attributes::KERNEL_DATA
        },
        Attributes {
            memory: MemoryType::NormalNonCacheable,
            ..Attributes::KERNEL_DATA
        },
    ];
    for (i, a) in aliases.iter().enumerate() {
        s.map(r(va + i as u64 * 4096, 4096), frame, *a, MapSize::Page4K)
            .unwrap();
    }
    let mut rec = Rec::default();
    let range = r(va, aliases.len() as u64 * 4096);
    let changed = s
        .protect(range, Access::KernelRo, Execute::Never, &mut rec)
        .unwrap()
        .expect("changed");
    let mut reported = Vec::new();
    for (i, a) in aliases.iter().enumerate() {
        let at = VirtAddr::new((va + i as u64 * 4096) as u32);
        let t = s.translate(at).unwrap();
        let want = a.with_permissions(Access::KernelRo, Execute::Never);
        assert_eq!((t.pa, t.mapping.attrs), (frame, want), "alias {i}");
        if want != *a {
            reported.push((at, a.global));
        }
    }
    let got: Vec<(VirtAddr, bool)> = rec.changed.iter().map(|l| (l.va, l.global)).collect();
    assert_eq!(got, reported);
    assert_eq!(changed.leaves, reported.len());
    teardown(s, &mem);
}

#[test]
fn protect_decides_each_alias_by_its_own_attributes_short() {
    protect_decides_each_alias_by_its_own_attributes::<Short>();
}

#[test]
fn protect_decides_each_alias_by_its_own_attributes_lpae() {
    protect_decides_each_alias_by_its_own_attributes::<Lpae>();
}

/// `leaf_access` (the fast path's decode) agrees with the full decode for every access the
/// format can express, every leaf size, and every other attribute bit pattern.
fn leaf_access_agrees_with_the_full_decode<F: TestFormat>(sizes: &[MapSize]) {
    let accesses = [
        Access::None,
        Access::KernelRw,
        Access::KernelRwUserRo,
        Access::UserRw,
        Access::KernelRo,
        Access::UserRo,
    ];
    let mut checked = 0;
    for &size in sizes {
        for access in accesses {
            if F::check_permissions(&F::ALL, access, Execute::Never).is_err() {
                continue;
            }
            for memory in crate::table::attrs::MemoryType::ALL {
                for global in [false, true] {
                    let attrs = Attributes {
                        access,
                        memory,
                        global,
                        ..Attributes::KERNEL_DATA
                    };
                    let raw = F::encode_leaf(size, 0x4000_0000, attrs);
                    let full = F::leaf_attrs(raw, size, F::ROOT_CTX).access;
                    assert_eq!(full, access, "{size:?} {attrs:?}");
                    assert_eq!(F::leaf_access(raw, size), full, "{size:?} {attrs:?}");
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= sizes.len() * 4 * 12, "{checked}");
}

#[test]
fn leaf_access_agrees_short() {
    leaf_access_agrees_with_the_full_decode::<Short>(&[
        MapSize::Page4K,
        MapSize::Large64K,
        MapSize::Section1M,
        MapSize::Super16M,
    ]);
}

#[test]
fn leaf_access_agrees_lpae() {
    leaf_access_agrees_with_the_full_decode::<Lpae>(&[
        MapSize::Page4K,
        MapSize::Block2M,
        MapSize::Block1G,
    ]);
}

fn checked_reads<F: TestFormat>() {
    let mem = HostMemory::new();
    let mut u = AddressSpace::<F, _>::new(mem.clone(), Layout::User { n: 2 }, F::ALL).unwrap();
    let k = AddressSpace::<F, _>::new(mem.clone(), Layout::Kernel { n: 2 }, F::ALL).unwrap();
    u.map(
        r(0x1000_0000, 4096),
        PhysAddr::new(0x2000),
        Attributes::USER_DATA,
        MapSize::Page4K,
    )
    .unwrap();
    let inside = VirtAddr::new(0x1000_0000);
    assert_eq!(u.translate_checked(inside).unwrap(), u.translate(inside));
    assert_eq!(u.translate_checked(VirtAddr::new(0x1000_1000)), Ok(None));
    // The other half: `translate` says nothing, the checked read says why.
    let kva = VirtAddr::new(0xc000_0000);
    assert_eq!(u.translate(kva), None);
    let e = u.translate_checked(kva).unwrap_err();
    assert_eq!((e.va, e.bounds), (kva, (0, 0x4000_0000)));
    let e = k.translate_checked(inside).unwrap_err();
    assert_eq!(e.bounds, (0x4000_0000, 1 << 32));
    assert!(std::format!("{e}").contains("outside"));
    // Ranges: inside is the plain iterator; reaching out is refused at its first VA out.
    assert_eq!(u.mappings_checked(r(0x1000_0000, 4096)).unwrap().count(), 1);
    let e = u
        .mappings_checked(r(0x3fff_f000, 0x2000))
        .map(|_| ())
        .unwrap_err();
    assert_eq!(e.va, VirtAddr::new(0x4000_0000));
    let e = k
        .mappings_checked(r(0x3fff_f000, 0x2000))
        .map(|_| ())
        .unwrap_err();
    assert_eq!(e.va, VirtAddr::new(0x3fff_f000));
    assert!(matches!(
        crate::Error::from(e),
        crate::Error::Read(crate::table::error::OutOfRange { .. })
    ));
    let mut rec = Rec::default();
    let mut m = u.destroy(&mut rec);
    rec.flush(&mut m);
    let m = k.destroy(&mut rec);
    let mut m = m;
    rec.flush(&mut m);
}

#[test]
fn checked_reads_say_out_of_range_for_the_other_half() {
    checked_reads::<Short>();
    checked_reads::<Lpae>();
}

/// The reads at the exact edges of every layout: a space's first and last page are its
/// own (`translate`, `translate_checked`, `lookup`, a range from its first VA or to its
/// end), the VA just outside each edge is not, and a range reaching out is refused at its
/// first VA outside, whichever edge it crosses.
fn reads_at_the_edges<F: TestFormat>() {
    let mem = HostMemory::new();
    for layout in LAYOUTS.into_iter().filter(|l| F::layout_usable(*l)) {
        let (lo, hi) = layout.bounds();
        let mut s = AddressSpace::<F, _>::new(mem.clone(), layout, F::ALL).unwrap();
        let attrs = match layout {
            Layout::User { .. } | Layout::UserLow { .. } => Attributes::USER_DATA,
            _ => Attributes::KERNEL_DATA,
        };
        for (va, pa) in [(lo, 0x1000), (hi - 4096, 0x2000)] {
            s.map(r(va, 4096), PhysAddr::new(pa), attrs, MapSize::Page4K)
                .unwrap();
        }
        for (va, pa) in [(lo, 0x1000), (hi - 1, 0x2fff)] {
            let at = VirtAddr::new(va as u32);
            let t = s.translate_checked(at).unwrap().expect("mapped");
            assert_eq!(t.pa, PhysAddr::new(pa), "{layout:?} {va:#x}");
            assert_eq!(s.lookup(at).expect("mapped").pa, t.pa, "{layout:?}");
        }
        let outside = [lo.checked_sub(1), (hi < 1 << 32).then_some(hi)];
        for va in outside.into_iter().flatten() {
            let at = VirtAddr::new(va as u32);
            assert_eq!(s.translate_checked(at).unwrap_err().va, at, "{layout:?}");
            assert_eq!(s.lookup(at), None, "{layout:?} {va:#x}");
        }
        let count = |range: VirtRange| s.mappings_checked(range).map(|m| m.count());
        assert_eq!(count(r(lo, hi - lo)), Ok(2), "{layout:?}");
        assert_eq!(count(r(lo, 4096)), Ok(1), "{layout:?}");
        assert_eq!(count(r(hi - 4096, 4096)), Ok(1), "{layout:?}");
        if lo > 0 {
            let e = count(r(lo - 4096, hi - lo + 4096)).unwrap_err();
            assert_eq!(e.va, VirtAddr::new((lo - 4096) as u32), "{layout:?}");
        }
        if hi < 1 << 32 {
            let e = count(r(lo, hi - lo + 4096)).unwrap_err();
            assert_eq!(e.va, VirtAddr::new(hi as u32), "{layout:?}");
        }
        teardown(s, &mem);
    }
}

#[test]
fn reads_at_the_edges_short() {
    reads_at_the_edges::<Short>();
}

#[test]
fn reads_at_the_edges_lpae() {
    reads_at_the_edges::<Lpae>();
}

// ----- table emptiness ----------------------------------------------------------------

/// A table below the root with one valid entry, at any index, is not empty: `free_tables`
/// over everything keeps it and the mapping. (The emptiness test ORs the table's words
/// together, four at a time: a wrong fold shows at some index.)
fn free_tables_keeps_a_table_with_one_entry_anywhere<F: TestFormat>(size: MapSize, level: u8) {
    let mem = HostMemory::new();
    let entries = F::ENTRIES[level as usize] as u64;
    let step = size.bytes();
    // The table whose entries span `step` and start at 0x4000_0000.
    for i in 0..entries {
        let mut s = whole::<F>(&mem);
        let va = 0x4000_0000 + i * step;
        s.map(
            r(va, step),
            PhysAddr::new(0x8000_0000),
            Attributes::KERNEL_DATA,
            size,
        )
        .unwrap();
        let tables = s.table_frames();
        let mut rec = Rec::default();
        assert_eq!(s.free_tables(all(), all(), &mut rec), Ok(0), "entry {i}");
        assert_eq!(s.table_frames(), tables, "entry {i}");
        let t = s.translate(VirtAddr::new(va as u32));
        assert_eq!(
            t.map(|t| t.pa),
            Some(PhysAddr::new(0x8000_0000)),
            "entry {i}"
        );
        // Unmapped, the same table is empty and goes.
        s.unmap(r(va, step), &mut rec).unwrap();
        assert!(
            s.free_tables(all(), all(), &mut rec).unwrap() >= 1,
            "entry {i}"
        );
        rec.flush(s.memory_mut());
        teardown(s, &mem);
    }
}

/// Two valid entries with the same low bits, in the first eight entries (the words the
/// emptiness test folds together first): the table is not empty either.
fn free_tables_keeps_a_table_with_two_entries_folded_together<F: TestFormat>() {
    let mem = HostMemory::new();
    for i in 0..8u64 {
        for j in i + 1..8 {
            let mut s = whole::<F>(&mem);
            map_pages(&mut s, &[0x4000_0000 + i * 4096, 0x4000_0000 + j * 4096]);
            let tables = s.table_frames();
            let mut rec = Rec::default();
            assert_eq!(
                s.free_tables(all(), all(), &mut rec),
                Ok(0),
                "entries {i}, {j}"
            );
            assert_eq!(s.table_frames(), tables, "entries {i}, {j}");
            teardown(s, &mem);
        }
    }
}

#[test]
fn free_tables_keeps_a_table_with_two_entries_folded_together_short() {
    free_tables_keeps_a_table_with_two_entries_folded_together::<Short>();
}

#[test]
fn free_tables_keeps_a_table_with_two_entries_folded_together_lpae() {
    free_tables_keeps_a_table_with_two_entries_folded_together::<Lpae>();
}

#[test]
fn a_page_whose_descriptor_is_only_its_valid_bits_is_found() {
    // Short descriptors: a global, execute-never, no-access small page of strongly-ordered
    // memory at PA 0 is the word 0b11, exactly the valid mask of the one-mask empty test.
    let mem = HostMemory::new();
    let mut s = whole::<Short>(&mem);
    let attrs = Attributes {
        memory: MemoryType::StronglyOrdered,
        access: Access::None,
        execute: Execute::Never,
        global: true,
        shareable: false,
    };
    s.map(
        r(0x4000_0000, 4096),
        PhysAddr::new(0),
        attrs,
        MapSize::Page4K,
    )
    .unwrap();
    let t = s.translate(VirtAddr::new(0x4000_0000));
    assert_eq!(t.map(|t| t.pa), Some(PhysAddr::new(0)));
    assert_eq!(sizes(&s, all()), [(0x4000_0000, MapSize::Page4K)]);
    let mut rec = Rec::default();
    s.unmap(all(), &mut rec).unwrap();
    assert_eq!(rec.leaves.len(), 1);
    rec.flush(s.memory_mut());
    teardown(s, &mem);
}

#[test]
fn free_tables_keeps_a_table_with_one_entry_anywhere_short() {
    free_tables_keeps_a_table_with_one_entry_anywhere::<Short>(MapSize::Page4K, 2);
}

#[test]
fn free_tables_keeps_a_table_with_one_entry_anywhere_lpae() {
    free_tables_keeps_a_table_with_one_entry_anywhere::<Lpae>(MapSize::Page4K, 3);
    free_tables_keeps_a_table_with_one_entry_anywhere::<Lpae>(MapSize::Block2M, 2);
}

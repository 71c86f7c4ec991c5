//! `run` (how many chunks of one shape `map` writes in one loop) against a recount chunk
//! by chunk from its contract, and `choose` at every chunk of the run. A run that is too
//! long maps a chunk with the wrong shape; one that is too short only costs time, which
//! no result shows, so only this comparison catches it.

use std::vec::Vec;

use super::AddressSpace;
use crate::addr::PhysAddr;
use crate::lpae::Lpae;
use crate::short::host::HostMemory;
use crate::short::Short;
use crate::sink::MapSize;
use crate::table::attrs::Attributes;
use crate::table::tests::{r, TestFormat};
use crate::table::{Format, Layout, LeafShape};

impl<F: Format> AddressSpace<F, HostMemory> {
    /// The run's length from its contract: chunks while each fits before `end`, stays in
    /// the table of the first, does not reach a VA where the next bigger usable size could
    /// start with this VA and PA, and (above the last level) has free entries.
    fn run_by_chunks(&self, s: LeafShape, va: u64, pa: u64, end: u64, max: MapSize) -> u64 {
        let b = s.size.bytes();
        let pos = F::LEAVES.iter().position(|l| l.size == s.size).unwrap();
        let bigger = F::LEAVES[..pos]
            .iter()
            .rev()
            .find(|l| l.size <= max && self.holds(**l))
            .map(|l| l.size.bytes())
            .filter(|&lb| (va ^ pa).is_multiple_of(lb));
        let parent = (s.level > self.root.level).then(|| Self::span(s.level - 1));
        let mut k = 1;
        loop {
            let v = va + k * b;
            if v + b > end
                || parent.is_some_and(|span| v.is_multiple_of(span))
                || bigger.is_some_and(|lb| v.is_multiple_of(lb))
                || (s.level != F::LAST_LEVEL && !self.free_at(v, s.level, s.copies))
            {
                return k;
            }
            k += 1;
        }
    }
}

/// A small deterministic generator (no dependency on proptest's case count).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn runs_match_their_contract<F: TestFormat>(layout: Layout, seed: u64) {
    let mem = HostMemory::new();
    let mut s = AddressSpace::<F, _>::new(mem.clone(), layout, F::ALL).unwrap();
    let (lo, hi) = layout.bounds();
    let mut rng = Lcg(seed);
    let sizes: Vec<MapSize> = F::LEAVES.iter().map(|l| l.size).collect();
    // Existing leaves in a 64 MiB window, so free and taken entries both occur.
    let base = lo.max(0x4000_0000).min(hi - (64 << 20));
    for _ in 0..12 {
        let size = sizes[rng.below(sizes.len() as u64) as usize];
        let b = size.bytes();
        let va = base + rng.below(((64 << 20) / b).max(1)) * b;
        if va + b <= hi && s.translate(crate::VirtAddr::new(va as u32)).is_none() {
            let _ = s.map(
                r(va, b),
                PhysAddr::new(0x8000_0000),
                Attributes::KERNEL_DATA,
                size,
            );
        }
    }
    let mut checked = 0;
    for _ in 0..3000 {
        // A chunk start aligned to a random size, a PA agreeing with it modulo a random
        // size, a random end and a random largest size.
        let a = sizes[rng.below(sizes.len() as u64) as usize].bytes();
        let va = base + rng.below(((64 << 20) / a).max(1)) * a;
        let agree = sizes[rng.below(sizes.len() as u64) as usize].bytes();
        let pa = 0x1_0000_0000 + (va & (agree - 1)) + rng.below(64) * (16 << 20);
        let end = (va + 4096 + rng.below(48 << 8) * 4096).min(hi);
        let max = sizes[rng.below(sizes.len() as u64) as usize];
        let shape = s.choose(va, pa, end, max);
        let n = s.run(shape, va, pa, end, max);
        let want = s.run_by_chunks(shape, va, pa, end, max);
        assert_eq!(
            n, want,
            "run at {va:#x} -> {pa:#x}, end {end:#x}, max {max:?}, {shape:?}"
        );
        let b = shape.size.bytes();
        for k in 0..n {
            let (v, p) = (va + k * b, pa + k * b);
            assert_eq!(
                s.choose(v, p, end, max),
                shape,
                "chunk {k} of the run at {va:#x}"
            );
        }
        checked += n;
    }
    assert!(checked > 3000, "{checked} chunks");
}

#[test]
fn runs_match_their_contract_short() {
    runs_match_their_contract::<Short>(Layout::Whole, 1);
    runs_match_their_contract::<Short>(Layout::User { n: 1 }, 2);
}

#[test]
fn runs_match_their_contract_lpae() {
    runs_match_their_contract::<Lpae>(Layout::Whole, 3);
    runs_match_their_contract::<Lpae>(Layout::User { n: 2 }, 4);
}

#[test]
fn a_run_of_supersections_stops_at_an_empty_table_left_in_the_next() {
    // Short, whole space: a page mapped and unmapped at 0x4100_0000 leaves its L2 table
    // linked (no `free_tables`). A map of [0x4000_0000, 0x4200_0000) must take one
    // supersection, then sections and the pages through that table: the run of
    // supersections ends at the second one, whose 16 entries are not all free.
    let mem = HostMemory::new();
    let mut s = crate::table::tests::whole::<Short>(&mem);
    let kd = Attributes::KERNEL_DATA;
    s.map(
        r(0x4100_0000, 4096),
        PhysAddr::new(0x8000_0000),
        kd,
        MapSize::Page4K,
    )
    .unwrap();
    let mut rec = crate::table::tests::Rec::default();
    s.unmap(r(0x4100_0000, 4096), &mut rec).unwrap();
    s.map(
        r(0x4000_0000, 32 << 20),
        PhysAddr::new(0x8000_0000),
        kd,
        MapSize::Super16M,
    )
    .unwrap();
    let got = crate::table::tests::sizes(&s, crate::table::tests::all());
    let count = |size: MapSize| got.iter().filter(|(_, s)| *s == size).count();
    assert_eq!(got[0], (0x4000_0000, MapSize::Super16M));
    assert_eq!(count(MapSize::Super16M), 1);
    assert_eq!(count(MapSize::Section1M), 15);
    // The megabyte under the table: pages (or large pages) through it.
    assert!(got
        .iter()
        .all(|&(va, size)| !(0x4100_0000..0x4110_0000).contains(&va) || size < MapSize::Section1M));
    let t = s.translate(crate::VirtAddr::new(0x41ff_f000)).unwrap();
    assert_eq!(t.pa, PhysAddr::new(0x81ff_f000));
}

/// A map over a run of pages whose fourth is taken is refused naming that page, with
/// nothing written (the run's entries are checked one by one before any write).
fn a_taken_page_inside_a_run_is_named<F: TestFormat>() {
    let mem = HostMemory::new();
    let mut s = crate::table::tests::whole::<F>(&mem);
    let kd = Attributes::KERNEL_DATA;
    s.map(
        r(0x4000_3000, 4096),
        PhysAddr::new(0x8000_0000),
        kd,
        MapSize::Page4K,
    )
    .unwrap();
    let before = s.snapshot();
    assert_eq!(
        s.map(
            r(0x4000_0000, 8 << 12),
            PhysAddr::new(0x9000_0000),
            kd,
            MapSize::Page4K
        ),
        Err(crate::table::error::MapError::AlreadyMapped(
            crate::VirtAddr::new(0x4000_3000)
        ))
    );
    assert!(s.snapshot() == before);
}

#[test]
fn a_taken_page_inside_a_run_is_named_short() {
    a_taken_page_inside_a_run_is_named::<Short>();
}

#[test]
fn a_taken_page_inside_a_run_is_named_lpae() {
    a_taken_page_inside_a_run_is_named::<Lpae>();
}

#[test]
fn a_block_is_chosen_beside_a_table_in_the_same_gib() {
    // LPAE, whole space: a page at 0x4000_0000 links a level-2 table for that GiB; a
    // 2 MiB block next to it must still be chosen (the walk descends into the table to
    // find its entry free).
    let mem = HostMemory::new();
    let mut s = crate::table::tests::whole::<Lpae>(&mem);
    let kd = Attributes::KERNEL_DATA;
    s.map(
        r(0x4000_0000, 4096),
        PhysAddr::new(0x8000_0000),
        kd,
        MapSize::Page4K,
    )
    .unwrap();
    s.map(
        r(0x4020_0000, 2 << 20),
        PhysAddr::new(0x8020_0000),
        kd,
        MapSize::Block2M,
    )
    .unwrap();
    let got = crate::table::tests::sizes(&s, crate::table::tests::all());
    assert_eq!(
        got,
        [
            (0x4000_0000, MapSize::Page4K),
            (0x4020_0000, MapSize::Block2M)
        ]
    );
}

#[test]
fn a_reserved_last_level_entry_is_stepped_over() {
    // LPAE level 3: bits [1:0] = 0b01 is reserved (invalid) though its valid bit is set.
    // A corrupted entry like that must read as unmapped, and walks must go past it.
    let mem = HostMemory::new();
    let mut s = crate::table::tests::whole::<Lpae>(&mem);
    let kd = Attributes::KERNEL_DATA;
    for va in [0x4000_0000u64, 0x4000_2000] {
        s.map(
            r(va, 4096),
            PhysAddr::new(0x8000_0000 + va),
            kd,
            MapSize::Page4K,
        )
        .unwrap();
    }
    let p = s
        .entry_ptr_for_test(crate::VirtAddr::new(0x4000_0000))
        .unwrap();
    // SAFETY: an aligned level-3 entry of this space's tables; nothing walks them now.
    unsafe { p.as_ptr().write((p.as_ptr().read() & !0b11) | 0b01) };
    let got = crate::table::tests::sizes(&s, crate::table::tests::all());
    assert_eq!(got, [(0x4000_2000, MapSize::Page4K)]);
    assert!(s.translate(crate::VirtAddr::new(0x4000_0000)).is_none());
}

#[test]
fn a_range_ending_one_page_before_a_blocks_end_is_refused() {
    // A section at [0x4010_0000, 0x4020_0000): a range that ends at 0x401f_f000 cuts it,
    // although the page after the range's end is already past the section.
    let mem = HostMemory::new();
    let mut s = crate::table::tests::whole::<Short>(&mem);
    let kd = Attributes::KERNEL_DATA;
    s.map(
        r(0x4010_0000, 1 << 20),
        PhysAddr::new(0x8010_0000),
        kd,
        MapSize::Section1M,
    )
    .unwrap();
    let before = s.snapshot();
    let mut rec = crate::table::tests::Rec::default();
    assert_eq!(
        s.unmap(r(0x4000_0000, 0x1f_f000), &mut rec),
        Err(crate::table::error::UnmapError::PartialBlock {
            va: crate::VirtAddr::new(0x4010_0000),
            size: MapSize::Section1M
        })
    );
    assert_eq!(s.snapshot(), before);
    assert!(rec.leaves.is_empty());
}

fn a_map_across_the_first_table_boundary_uses_both_tables<F: TestFormat>() {
    // The first table below the root covers [0, span); a map from its last page into the
    // next table's first page must write each page in its own table.
    let mem = HostMemory::new();
    let mut s = crate::table::tests::whole::<F>(&mem);
    let span = AddressSpace::<F, HostMemory>::span(F::LAST_LEVEL - 1);
    let pa = 0x8000_0000;
    let kd = Attributes::KERNEL_DATA;
    s.map(r(span - 4096, 8192), PhysAddr::new(pa), kd, MapSize::Page4K)
        .unwrap();
    let got = crate::table::tests::sizes(&s, crate::table::tests::all());
    assert_eq!(
        got,
        [(span - 4096, MapSize::Page4K), (span, MapSize::Page4K)]
    );
    let at = |va: u64| s.translate(crate::VirtAddr::new(va as u32)).map(|t| t.pa);
    assert_eq!(at(span - 4096), Some(PhysAddr::new(pa)));
    assert_eq!(at(span), Some(PhysAddr::new(pa + 4096)));
    // And a second map there is refused: both pages are taken.
    assert!(s
        .map(r(span, 4096), PhysAddr::new(pa), kd, MapSize::Page4K)
        .is_err());
    // With both tables there and the page past the boundary taken, the same map is
    // refused at it, before anything is written (the plan checks each page in its own
    // table too).
    let mut t = crate::table::tests::whole::<F>(&mem);
    for va in [span - 8192, span] {
        t.map(r(va, 4096), PhysAddr::new(pa), kd, MapSize::Page4K)
            .unwrap();
    }
    let before = t.snapshot();
    let got = t.map(r(span - 4096, 8192), PhysAddr::new(pa), kd, MapSize::Page4K);
    let taken = crate::VirtAddr::new(span as u32);
    assert_eq!(
        got,
        Err(crate::table::error::MapError::AlreadyMapped(taken))
    );
    assert_eq!(t.snapshot(), before);
}

#[test]
fn a_map_across_the_first_table_boundary_uses_both_tables_short() {
    a_map_across_the_first_table_boundary_uses_both_tables::<Short>();
}

#[test]
fn a_map_across_the_first_table_boundary_uses_both_tables_lpae() {
    a_map_across_the_first_table_boundary_uses_both_tables::<Lpae>();
}

/// A memory that, after `good` allocations, hands out each frame at `at(frame)` instead
/// (a misaligned address, or the first frame past the format's table limit), and takes it
/// back where it came from.
struct Moved {
    inner: HostMemory,
    good: usize,
    at: fn(u64) -> u64,
    moved: Vec<(u64, u64)>,
}

// SAFETY: frames come from `HostMemory`; a moved frame is never mapped (`phys_to_virt` is
// only asked for frames the space accepted, which are unmoved).
unsafe impl crate::memory::Memory for Moved {
    fn allocate_frames(&mut self, count: usize, align: usize) -> Option<PhysAddr> {
        let f = self.inner.allocate_frames(count, align)?.as_u64();
        if self.good == 0 {
            let to = (self.at)(f);
            self.moved.push((to, f));
            return Some(PhysAddr::new(to));
        }
        self.good -= 1;
        Some(PhysAddr::new(f))
    }
    fn free_frames(&mut self, pa: PhysAddr, count: usize) {
        let pa = pa.as_u64();
        let back = self.moved.iter().find(|m| m.0 == pa).map_or(pa, |m| m.1);
        self.inner.free_frames(PhysAddr::new(back), count);
    }
    fn phys_to_virt(&self, pa: PhysAddr) -> core::ptr::NonNull<u8> {
        self.inner.phys_to_virt(pa)
    }
}

/// A whole space over a [`Moved`] memory that moves every frame after the root's.
fn moved_whole<F: TestFormat>(at: fn(u64) -> u64) -> (HostMemory, AddressSpace<F, Moved>) {
    let mem = HostMemory::new();
    let moved = Moved {
        inner: mem.clone(),
        good: 1,
        at,
        moved: Vec::new(),
    };
    (
        mem.clone(),
        AddressSpace::new(moved, Layout::Whole, F::ALL).unwrap(),
    )
}

fn a_frame_the_walker_cannot_reach_is_refused_and_returned<F: TestFormat>(at: fn(u64) -> u64) {
    let (mem, mut s) = moved_whole::<F>(at);
    let before = mem.outstanding();
    let kd = Attributes::KERNEL_DATA;
    let got = s.map(
        r(0x4000_0000, 4096),
        PhysAddr::new(0x8000_0000),
        kd,
        MapSize::Page4K,
    );
    assert!(
        matches!(got, Err(crate::table::error::MapError::TableUnreachable(_))),
        "{got:?}"
    );
    assert_eq!(mem.outstanding(), before, "a frame kept");
    assert!(s.translate(crate::VirtAddr::new(0x4000_0000)).is_none());
}

#[test]
fn a_frame_the_walker_cannot_reach_is_refused_and_returned_short() {
    // Misaligned, and at the first frame past the 4 GiB a short table address can hold.
    a_frame_the_walker_cannot_reach_is_refused_and_returned::<Short>(|f| f + 0x800);
    a_frame_the_walker_cannot_reach_is_refused_and_returned::<Short>(|_| {
        <Short as Format>::TABLE_PA_LIMIT
    });
}

#[test]
fn a_frame_the_walker_cannot_reach_is_refused_and_returned_lpae() {
    a_frame_the_walker_cannot_reach_is_refused_and_returned::<Lpae>(|f| f + 0x800);
    a_frame_the_walker_cannot_reach_is_refused_and_returned::<Lpae>(|_| {
        <Lpae as Format>::TABLE_PA_LIMIT
    });
}

/// A split whose table frame the walker cannot reach (see [`Moved`]) is refused with
/// `TableUnreachable` naming that frame, by `unmap_split` and `protect_split` alike, with
/// the block as it was and the frame returned. (A plain out-of-memory answer would send a
/// kernel to reclaim memory it does not lack.)
fn a_split_into_an_unreachable_frame_is_refused<F: TestFormat>(block: MapSize, at: fn(u64) -> u64) {
    use crate::table::attrs::{Access, Execute};
    use crate::table::error::{ProtectError, UnmapError};
    let (mem, mut s) = moved_whole::<F>(at);
    let va = 0x4000_0000;
    s.map(
        r(va, block.bytes()),
        PhysAddr::new(0x4000_0000),
        Attributes::KERNEL_DATA,
        block,
    )
    .unwrap();
    let before = (s.snapshot(), mem.outstanding());
    let cut = r(va + block.bytes() / 2, 4096);
    let mut rec = crate::table::tests::Rec::default();
    let unreachable =
        |pa: PhysAddr| !pa.as_u64().is_multiple_of(4096) || pa.as_u64() >= F::TABLE_PA_LIMIT;
    match s.unmap_split(cut, &mut rec) {
        Err(UnmapError::TableUnreachable(pa)) => assert!(unreachable(pa), "{pa:?}"),
        got => panic!("unmap_split: {got:?}"),
    }
    assert!((s.snapshot(), mem.outstanding()) == before);
    match s.protect_split(cut, Access::KernelRo, Execute::Never, &mut rec) {
        Err(ProtectError::TableUnreachable(pa)) => assert!(unreachable(pa), "{pa:?}"),
        got => panic!("protect_split: {got:?}"),
    }
    assert!((s.snapshot(), mem.outstanding()) == before);
    assert!(rec.leaves.is_empty() && rec.changed.is_empty() && rec.flushes_now == 0);
}

#[test]
fn a_split_into_an_unreachable_frame_is_refused_short() {
    a_split_into_an_unreachable_frame_is_refused::<Short>(MapSize::Section1M, |f| f + 0x800);
    a_split_into_an_unreachable_frame_is_refused::<Short>(MapSize::Super16M, |_| {
        <Short as Format>::TABLE_PA_LIMIT
    });
}

#[test]
fn a_split_into_an_unreachable_frame_is_refused_lpae() {
    a_split_into_an_unreachable_frame_is_refused::<Lpae>(MapSize::Block1G, |f| f + 0x800);
    a_split_into_an_unreachable_frame_is_refused::<Lpae>(MapSize::Block1G, |_| {
        <Lpae as Format>::TABLE_PA_LIMIT
    });
}

/// A memory that counts `phys_to_virt` calls: one per table the space visits.
struct Counting {
    inner: HostMemory,
    visits: core::cell::Cell<usize>,
}

// SAFETY: every call is forwarded to `HostMemory`.
unsafe impl crate::memory::Memory for Counting {
    fn allocate_frames(&mut self, count: usize, align: usize) -> Option<PhysAddr> {
        self.inner.allocate_frames(count, align)
    }
    fn free_frames(&mut self, pa: PhysAddr, count: usize) {
        self.inner.free_frames(pa, count);
    }
    fn phys_to_virt(&self, pa: PhysAddr) -> core::ptr::NonNull<u8> {
        self.visits.set(self.visits.get() + 1);
        self.inner.phys_to_virt(pa)
    }
}

#[test]
fn a_map_of_several_runs_in_one_table_visits_it_as_often_as_one_run() {
    // Short, whole space, one L2 table already linked for [0x4000_0000, 0x4010_0000).
    // `map` remembers the last table it planned and wrote through, so a map of four runs
    // in that table (a page, two large pages, a page) walks to it no more often than a map
    // of one run of pages: the cost of a map grows with the tables it touches, not with
    // the runs.
    let mem = HostMemory::new();
    let counting = Counting {
        inner: mem.clone(),
        visits: core::cell::Cell::new(0),
    };
    let mut s = AddressSpace::<Short, _>::new(counting, Layout::Whole, Short::ALL).unwrap();
    let kd = Attributes::KERNEL_DATA;
    let visits = |s: &mut AddressSpace<Short, Counting>, va: u64, len: u64, max| {
        let before = s.mem.visits.get();
        s.map(
            r(va, len),
            PhysAddr::new(0x8000_0000 + va % (1 << 20)),
            kd,
            max,
        )
        .unwrap();
        s.mem.visits.get() - before
    };
    visits(&mut s, 0x400f_f000, 4096, MapSize::Page4K);
    let one_run = visits(&mut s, 0x4000_0000, 16 << 12, MapSize::Page4K);
    let four_runs = visits(&mut s, 0x4002_f000, 0x2_2000, MapSize::Large64K);
    let got: Vec<MapSize> = s
        .mappings(r(0x4002_f000, 0x2_2000))
        .map(|m| m.size)
        .collect();
    assert_eq!(
        got,
        [
            MapSize::Page4K,
            MapSize::Large64K,
            MapSize::Large64K,
            MapSize::Page4K
        ]
    );
    assert!(one_run > 0);
    assert_eq!(four_runs, one_run);
}

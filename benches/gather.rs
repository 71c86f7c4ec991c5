//! Host benchmark of the gather's bookkeeping (`cargo bench --bench gather`).
//!
//! What a 64 MiB unmap costs the CPU on top of the descriptor stores themselves, measured
//! side by side with the floor: a plain loop storing zero into the same number of
//! descriptor words (16,384 small-page entries and the 64 L1 entries that pointed at their
//! tables), one volatile word store each, as a live table must be written.
//!
//! - `floor`: the loop;
//! - `gather-record-flush`: the gather fed directly with what an unmap and free-tables of
//!   64 MiB report (16,384 cleared pages, 64 unlinked tables, their table memory), then
//!   `finish` through a counting backend: the bookkeeping alone, with no table walk;
//! - `zap-gather-64MiB`: the whole path: unmap the 64 MiB through the page tables with the
//!   gather as the sink, free the emptied tables, finish.
//!
//! The TLB backend only counts, and mapped frames are "released" by counting them (they are
//! fake PAs, never touched), so what is measured is the crate's own work. BENCHMARKS.md has
//! the numbers and the goal (the gather within 2x of the floor).

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::hint::black_box;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use armv7_mm::gather::{InFlight, MmuGather, Scope};
use armv7_mm::{
    Asid, ClearedLeaf, MapSize, Memory, PhysAddr, TlbBackend, TlbCounters, UnmapSink, VirtAddr,
};
use criterion::{criterion_group, criterion_main, Criterion};

const PAGE: u64 = 4096;
const MIB: u64 = 1 << 20;
const VA: u32 = 0x1000_0000;
const BYTES: u64 = 64 * MIB;
const PAGES: u64 = BYTES / PAGE;
const L2_TABLES: u64 = BYTES / MIB;
/// PA of the arena's first frame (16 KiB aligned, like an L1 table must be).
const ARENA_PA: u64 = 0x4000_0000;
/// PA of the first mapped (data) frame: outside the arena, never dereferenced.
const DATA_PA: u64 = 0x8000_0000;

/// Table memory for the host: a heap block handed out in 4 KiB frames.
struct Arena {
    base: NonNull<u8>,
    used: Vec<bool>,
    next: usize,
    outstanding: usize,
    released_bytes: u64,
}

impl Arena {
    fn new(frames: usize) -> Self {
        let layout = Self::layout(frames);
        // SAFETY: the layout has a non-zero size.
        let base = NonNull::new(unsafe { alloc_zeroed(layout) }).expect("arena");
        Arena {
            base,
            used: vec![false; frames],
            next: 0,
            outstanding: 0,
            released_bytes: 0,
        }
    }

    fn layout(frames: usize) -> Layout {
        Layout::from_size_align(frames * PAGE as usize, 16384).expect("layout")
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with the same layout.
        unsafe { dealloc(self.base.as_ptr(), Self::layout(self.used.len())) }
    }
}

impl Memory for Arena {
    fn allocate_frames(&mut self, count: usize, align: usize) -> Option<PhysAddr> {
        let step = (align / PAGE as usize).max(1);
        let n = self.used.len();
        for pass in 0..2 {
            let mut i = if pass == 0 {
                self.next.div_ceil(step) * step
            } else {
                0
            };
            while i + count <= n {
                if self.used[i..i + count].iter().all(|u| !u) {
                    self.used[i..i + count].iter_mut().for_each(|u| *u = true);
                    self.next = i + count;
                    self.outstanding += count;
                    return Some(PhysAddr::new(ARENA_PA + i as u64 * PAGE));
                }
                i += step;
            }
        }
        None
    }

    fn free_frames(&mut self, pa: PhysAddr, count: usize) {
        let i = ((pa.as_u64() - ARENA_PA) / PAGE) as usize;
        for u in &mut self.used[i..i + count] {
            assert!(*u, "double free of an arena frame");
            *u = false;
        }
        self.outstanding -= count;
    }

    fn phys_to_virt(&self, pa: PhysAddr) -> NonNull<u8> {
        let off = (pa.as_u64() - ARENA_PA) as usize;
        assert!(
            off < self.used.len() * PAGE as usize,
            "PA {pa:?} outside the arena"
        );
        // SAFETY: in bounds of the arena block, checked above.
        unsafe { NonNull::new_unchecked(self.base.as_ptr().add(off)) }
    }

    fn release_mapped(&mut self, _pa: PhysAddr, bytes: usize) {
        self.released_bytes += bytes as u64;
    }
}

/// A backend that only counts.
#[derive(Default)]
struct Counting(TlbCounters);

impl TlbBackend for Counting {
    fn prepare(&mut self) {
        self.0.prepares += 1;
    }
    fn invalidate_va(&mut self, _: VirtAddr, _: Asid) {
        self.0.va += 1;
    }
    fn invalidate_va_all_asids(&mut self, _: VirtAddr) {
        self.0.va_all_asids += 1;
    }
    fn invalidate_asid(&mut self, _: Asid) {
        self.0.asid += 1;
    }
    fn invalidate_all(&mut self) {
        self.0.all += 1;
    }
    fn invalidate_branch_predictor(&mut self) {
        self.0.branch_predictor += 1;
    }
    fn complete(&mut self) {
        self.0.completions += 1;
    }
    fn counters(&self) -> TlbCounters {
        self.0
    }
}

/// Times `routine` after an untimed `setup`, `iters` times; both work on `state`.
fn timed<T, S>(
    iters: u64,
    state: &mut T,
    mut setup: impl FnMut(&mut T) -> S,
    mut routine: impl FnMut(&mut T, S),
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let input = setup(state);
        let t = Instant::now();
        routine(state, input);
        total += t.elapsed();
    }
    total
}

fn floor(c: &mut Criterion) {
    let words = (PAGES + L2_TABLES) as usize;
    let mut table = vec![0u32; words];
    c.bench_function("floor: clear 16,448 descriptor words", |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                &mut table,
                |table| table.iter_mut().for_each(|w| *w = 0x8000_0002),
                |table, ()| {
                    for w in table.iter_mut() {
                        // SAFETY: `w` is a valid, aligned `u32` of the vector.
                        unsafe { std::ptr::write_volatile(w, 0) };
                    }
                },
            )
        })
    });
    black_box(&table);
}

fn gather_record_flush(c: &mut Criterion) {
    let mut arena = Arena::new(64);
    let in_flight = InFlight::new();
    c.bench_function("gather-record-flush: 64 MiB of reports, then finish", |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                &mut arena,
                |arena| {
                    // The table memory the reports will hand back: 64 L2 tables of 1 KiB
                    // packed four to a frame.
                    let tables: Vec<PhysAddr> = (0..L2_TABLES / 4)
                        .map(|_| {
                            arena
                                .allocate_frames(1, PAGE as usize)
                                .expect("table frame")
                        })
                        .collect();
                    tables
                },
                |arena, tables| {
                    let mut tlb = Counting::default();
                    let mut g = MmuGather::new(Scope::Asid(Asid(7)), &mut tlb, arena, &in_flight);
                    for i in 0..PAGES {
                        g.leaf_cleared(ClearedLeaf {
                            va: VirtAddr::new(VA + (i * PAGE) as u32),
                            size: MapSize::Page4K,
                            pa: PhysAddr::new(DATA_PA + i * PAGE),
                            global: false,
                            executable: false,
                        });
                    }
                    for (f, pa) in tables.iter().enumerate() {
                        for t in 0..4u64 {
                            let region = (f as u64 * 4 + t) * MIB;
                            g.table_unlinked(VirtAddr::new(VA + region as u32), MIB, false);
                        }
                        g.table_memory_freed(*pa, 1);
                    }
                    black_box(g.finish());
                },
            )
        })
    });
    assert_eq!(arena.outstanding, 0, "the gather returned every frame");
}

criterion_group!(benches, floor, gather_record_flush);
criterion_main!(benches);

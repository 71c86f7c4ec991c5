//! Host benchmark of the gather's bookkeeping (`cargo bench --bench gather`).
//!
//! What a 64 MiB unmap of 4 KiB pages costs the CPU, next to the floor: a plain loop
//! storing zero into the same number of descriptor words (16,384 small-page entries and the
//! 64 L1 entries that pointed at their tables), one volatile word store each, as a live
//! table must be written.
//!
//! - `floor`: the loop;
//! - `gather-record-flush`: the gather alone, fed directly with what an unmap and
//!   free-tables of 64 MiB report (16,384 cleared pages, 64 unlinked tables, 16 frames of
//!   table memory), then `finish`: its bookkeeping with no table walk;
//! - `zap-null-sink`: the walker alone: `AddressSpace::unmap` of the 64 MiB into a sink that
//!   does nothing;
//! - `zap-gather`: the whole path: unmap the 64 MiB with the gather as the sink, free the
//!   emptied tables, finish.
//!
//! The TLB backend only counts, and mapped frames are "released" by doing nothing with them
//! (their PAs are made up and never touched; the flush report counts them), so what is
//! measured is the crate's own work. Table
//! memory comes from a heap arena behind a zero-sized handle whose `phys_to_virt` is one
//! addition, like a kernel's linear map. BENCHMARKS.md has the numbers and the goal (the
//! gather within 2x of the floor).

use std::alloc::{alloc_zeroed, Layout as AllocLayout};
use std::hint::black_box;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use armv7_mm::gather::{InFlight, MmuGather, Scope};
use armv7_mm::short::{AddressSpace, Attributes, Features, Layout};
use armv7_mm::{
    Asid, ClearedLeaf, MapSize, MappedRun, Memory, PhysAddr, TlbBackend, TlbCounters, UnmapSink,
    VirtAddr, VirtRange,
};
use criterion::{criterion_group, criterion_main, Criterion};

const PAGE: u64 = 4096;
const MIB: u64 = 1 << 20;
const VA: u32 = 0x1000_0000;
const BYTES: u64 = 64 * MIB;
const PAGES: u64 = BYTES / PAGE;
const L2_TABLES: u64 = BYTES / MIB;
/// PA of the arena's first frame (16 KiB aligned, as an L1 table must be).
const ARENA_PA: u64 = 0x4000_0000;
/// Frames in the arena: the L1 table, 16 L2 frames, batch frames, with room to spare.
const ARENA_FRAMES: usize = 256;
/// PA of the first mapped (data) frame: outside the arena, never dereferenced.
const DATA_PA: u64 = 0x8000_0000;

/// The arena's host address (set once by [`arena_init`]).
static ARENA_BASE: AtomicUsize = AtomicUsize::new(0);
/// Which arena frames are allocated.
static ARENA_USED: Mutex<[bool; ARENA_FRAMES]> = Mutex::new([false; ARENA_FRAMES]);

fn arena_init() {
    if ARENA_BASE.load(Ordering::Relaxed) != 0 {
        return;
    }
    let layout = AllocLayout::from_size_align(ARENA_FRAMES * PAGE as usize, 16384).expect("layout");
    // SAFETY: the layout has a non-zero size. The block lives as long as the process.
    let base = unsafe { alloc_zeroed(layout) };
    assert!(!base.is_null(), "arena allocation failed");
    ARENA_BASE.store(base as usize, Ordering::Relaxed);
}

fn arena_outstanding() -> usize {
    ARENA_USED.lock().unwrap().iter().filter(|u| **u).count()
}

/// The kernel's memory, for the host: table frames from the arena; mapped frames are made
/// up, so releasing one does nothing.
#[derive(Clone, Copy, Debug, Default)]
struct HostFrames;

// SAFETY: frames are 4 KiB slots of one heap arena that lives for the whole bench, handed
// out at most once at a time; `phys_to_virt` maps into that arena.
unsafe impl Memory for HostFrames {
    fn allocate_frames(&mut self, count: usize, align: usize) -> Option<PhysAddr> {
        let step = (align / PAGE as usize).max(1);
        let mut used = ARENA_USED.lock().unwrap();
        let mut i = 0;
        while i + count <= ARENA_FRAMES {
            if used[i..i + count].iter().all(|u| !u) {
                used[i..i + count].iter_mut().for_each(|u| *u = true);
                return Some(PhysAddr::new(ARENA_PA + i as u64 * PAGE));
            }
            i += step;
        }
        None
    }

    fn free_frames(&mut self, pa: PhysAddr, count: usize) {
        let i = ((pa.as_u64() - ARENA_PA) / PAGE) as usize;
        let mut used = ARENA_USED.lock().unwrap();
        for u in &mut used[i..i + count] {
            assert!(*u, "double free of an arena frame");
            *u = false;
        }
    }

    fn phys_to_virt(&self, pa: PhysAddr) -> NonNull<u8> {
        let addr = ARENA_BASE.load(Ordering::Relaxed) + (pa.as_u64() - ARENA_PA) as usize;
        // SAFETY: the arena is allocated (non-null) before any frame is handed out.
        unsafe { NonNull::new_unchecked(addr as *mut u8) }
    }

    fn release_mapped(&mut self, _va: VirtAddr, pa: PhysAddr, bytes: usize) {
        // A made-up data frame: nothing to free. The flush report counts what came back.
        black_box((pa, bytes));
    }

    fn release_mapped_run(&mut self, run: MappedRun) {
        // A run in one call, as the QEMU benchmark's allocator (and a buddy or bitmap
        // allocator) takes it; the default would make one `release_mapped` per leaf.
        black_box(run);
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

/// A sink that only counts what it is told.
struct Null(u64);

impl UnmapSink for Null {
    // Not a protect sink: nothing to invalidate or flush early here.
    fn leaf_changed(&mut self, _: armv7_mm::ChangedLeaf) {}
    fn flush_now(&mut self) {}
    fn leaf_cleared(&mut self, _: ClearedLeaf) {
        self.0 += 1;
    }
    fn table_unlinked(&mut self, _: VirtAddr, _: u64, _: bool) {}
    fn table_memory_freed(&mut self, _: PhysAddr, _: usize) {}
}

fn range() -> VirtRange {
    VirtRange::from_start_len(VirtAddr::new(VA), BYTES).expect("range")
}

/// An address space with the 64 MiB mapped by 4 KiB pages (kernel data, as in the QEMU
/// benchmark).
fn mapped_space() -> AddressSpace<HostFrames> {
    let mut s = AddressSpace::new(HostFrames, Layout::Whole, Features::ALL).expect("L1");
    s.map(
        range(),
        PhysAddr::new(DATA_PA),
        Attributes::KERNEL_DATA,
        MapSize::Page4K,
    )
    .expect("map");
    s
}

/// Destroys a space, flushing through a counting backend (not measured).
fn destroy(s: AddressSpace<HostFrames>) {
    let in_flight = InFlight::new();
    let mut tlb = Counting::default();
    let mut g = MmuGather::new(Scope::Teardown(Asid(1)), &mut tlb, HostFrames, &in_flight);
    s.destroy(&mut g);
    g.finish();
}

/// Times `routine`, `iters` times, between an untimed `setup` and an untimed `after` that
/// gets what the routine returned.
fn timed<S, R>(
    iters: u64,
    mut setup: impl FnMut() -> S,
    mut routine: impl FnMut(S) -> R,
    mut after: impl FnMut(R),
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let input = setup();
        let t = Instant::now();
        let out = routine(input);
        total += t.elapsed();
        after(black_box(out));
    }
    total
}

fn floor(c: &mut Criterion) {
    let words = (PAGES + L2_TABLES) as usize;
    let table = std::cell::RefCell::new(vec![0u32; words]);
    c.bench_function("floor: clear 16,448 descriptor words", |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                || table.borrow_mut().iter_mut().for_each(|w| *w = 0x8000_0002),
                |()| {
                    for w in table.borrow_mut().iter_mut() {
                        // SAFETY: `w` is a valid, aligned `u32` of the vector.
                        unsafe { std::ptr::write_volatile(w, 0) };
                    }
                },
                drop,
            )
        })
    });
}

fn gather_record_flush(c: &mut Criterion) {
    arena_init();
    let in_flight = InFlight::new();
    let base = arena_outstanding();
    c.bench_function("gather-record-flush: 64 MiB of reports, then finish", |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                || {
                    // The table memory the reports hand back: 64 L2 tables of 1 KiB,
                    // four to a frame.
                    (0..L2_TABLES / 4)
                        .map(|_| HostFrames.allocate_frames(1, PAGE as usize).expect("frame"))
                        .collect::<Vec<_>>()
                },
                |tables| {
                    let mut tlb = Counting::default();
                    let mut g = MmuGather::new(Scope::Kernel, &mut tlb, HostFrames, &in_flight);
                    for i in 0..PAGES {
                        g.leaf_cleared(ClearedLeaf {
                            va: VirtAddr::new(VA + (i * PAGE) as u32),
                            size: MapSize::Page4K,
                            pa: PhysAddr::new(DATA_PA + i * PAGE),
                            global: true,
                            executable: false,
                        });
                    }
                    for (f, pa) in tables.iter().enumerate() {
                        for t in 0..4u64 {
                            let region = (f as u64 * 4 + t) * MIB;
                            g.table_unlinked(VirtAddr::new(VA + region as u32), MIB, true);
                        }
                        g.table_memory_freed(*pa, 1);
                    }
                    g.finish()
                },
                |report| assert_eq!(report.bytes_released, BYTES),
            )
        })
    });
    assert_eq!(arena_outstanding(), base, "the gather returned every frame");
}

fn zap_null_sink(c: &mut Criterion) {
    arena_init();
    c.bench_function("zap-null-sink: unmap 64 MiB into a do-nothing sink", |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                mapped_space,
                |mut s| {
                    let mut null = Null(0);
                    s.unmap(range(), &mut null).expect("unmap");
                    (s, null.0)
                },
                |(s, cleared)| {
                    assert_eq!(cleared, PAGES);
                    destroy(s);
                },
            )
        })
    });
}

fn zap_gather(c: &mut Criterion) {
    arena_init();
    let in_flight = InFlight::new();
    let base = arena_outstanding();
    c.bench_function("zap-gather: unmap + free tables + finish, 64 MiB", |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                mapped_space,
                |mut s| {
                    let mut tlb = Counting::default();
                    let mut g = MmuGather::new(Scope::Kernel, &mut tlb, HostFrames, &in_flight);
                    s.unmap(range(), &mut g).expect("unmap");
                    s.free_tables(range(), range(), &mut g)
                        .expect("free_tables");
                    (s, g.finish())
                },
                |(s, report)| {
                    assert_eq!(report.bytes_released, BYTES);
                    assert_eq!(report.table_frames_freed as u64, L2_TABLES / 4);
                    destroy(s);
                },
            )
        })
    });
    assert_eq!(arena_outstanding(), base, "every table frame came back");
}

criterion_group!(
    benches,
    floor,
    gather_record_flush,
    zap_null_sink,
    zap_gather
);
criterion_main!(benches);

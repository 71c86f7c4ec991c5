//! Benchmark kernel: armv7-mm against the ARMv7 `PageTable32` of the published crate
//! `page_table_multiarch`, in the same QEMU run.
//!
//! Not a boot test (it has no QEMU header line, so `cargo xtask test` skips it):
//! `cargo xtask bench` boots it under `-icount shift=0`, where the cycle counter counts
//! instructions exactly (see `rt::pmu`), twice, and checks the two runs print the same
//! numbers.
//!
//! Every workload is written once, generically over [`Side`], and run for both crates with the
//! same frame allocator (`rt::frames`), the same VAs and PAs, and the same checks afterwards
//! (translations right, every frame back). Only the work named by the workload is inside the
//! measured section: creating the empty address space and allocating the frames to be mapped
//! are not; mapping, table allocation, unmapping, the TLB flush and handing frames back are.
//!
//! Output: one line per result,
//! `bench <workload>: armv7-mm=<n> page_table_multiarch=<m> <unit>`, and `info` lines with
//! the raw totals. BENCHMARKS.md explains each workload and what each side does for it.

#![no_std]
#![no_main]

use core::hint::black_box;
use core::sync::atomic::{AtomicU32, Ordering};

use rt::{frames, pmu, println};

rt::entry!(main);

const KIB: u32 = 1 << 10;
const MIB: u32 = 1 << 20;
const PAGE: u32 = 4 * KIB;

/// Where the 64 MiB, 8-scattered-pages and section workloads map.
const VA_WORK: u32 = 0x1000_0000;
/// Where the 256 MiB address space (translate, teardown, table memory) maps.
const VA_BIG: u32 = 0x2000_0000;
const DENSE_BYTES: u32 = 64 * MIB;
const BIG_BYTES: u32 = 256 * MIB;
const SECTION_BYTES: u32 = 16 * MIB;
const SCATTERED: usize = 8;
const LOOKUPS: usize = 100_000;
/// Seed of the address generator (xorshift32); fixed, so both runs see the same addresses.
const SEED: u32 = 0x2545_f491;

/// One contiguous piece of work: `bytes` at `va`, backed by `[pa, pa + bytes)`.
#[derive(Clone, Copy)]
struct Chunk {
    va: u32,
    pa: u32,
    bytes: u32,
}

/// Mapping sizes a workload lets a side use.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sizes {
    /// 4 KiB pages only.
    Pages,
    /// 1 MiB sections (the chunks are 1 MiB aligned in VA and PA).
    Sections,
}

/// What a workload needs from a page-table crate. Each method is what a kernel would call
/// for that step, done the way the crate's API is meant to be used.
trait Side: Sized {
    const NAME: &'static str;
    /// An empty address space (not measured).
    fn new() -> Self;
    /// Maps every chunk, with normal memory, kernel read/write, not executable.
    fn map(&mut self, chunks: &[Chunk], sizes: Sizes);
    /// Unmaps every range, flushes the TLB for it, then hands the mapped frames back to the
    /// allocator, and the page tables that became empty within `[floor, ceiling)` where the
    /// crate can do that.
    fn unmap_free(&mut self, ranges: &[(u32, u32)], floor: u32, ceiling: u32);
    /// Makes every mapping in `[va, va + bytes)` kernel read-only (still never executable)
    /// and flushes the TLB for it: an `mprotect`.
    fn protect(&mut self, va: u32, bytes: u32);
    /// Whether `va` is mapped writable now.
    fn writable(&self, va: u32) -> bool;
    /// The PA `va` translates to.
    fn translate(&self, va: u32) -> Option<u32>;
    /// Tears the address space down: every mapped frame and all table memory go back to the
    /// allocator, after whatever TLB flush the address space needs. Returns the TLB
    /// invalidates it issued.
    fn teardown(self, ranges: &[(u32, u32)]) -> u64;
    /// TLB invalidate operations issued so far by this address space's operations.
    fn invalidates(&self) -> u64;
}

// ---------------------------------------------------------------------------------------
// Measurement

static OVERHEAD: AtomicU32 = AtomicU32::new(0);

/// Instructions `f` took (the counter reads' own cost taken off).
#[inline(always)]
fn timed<R>(f: impl FnOnce() -> R) -> (u64, R) {
    let t0 = pmu::cycles();
    let r = f();
    let t1 = pmu::cycles();
    let raw = t1.wrapping_sub(t0);
    (
        u64::from(raw.saturating_sub(OVERHEAD.load(Ordering::Relaxed))),
        r,
    )
}

fn calibrate() {
    let mut best = u32::MAX;
    for _ in 0..8 {
        let t0 = pmu::cycles();
        black_box(());
        let t1 = pmu::cycles();
        best = best.min(t1.wrapping_sub(t0));
    }
    OVERHEAD.store(best, Ordering::Relaxed);
}

fn fail(what: core::fmt::Arguments) -> ! {
    println!("bench FAILED: {}", what);
    rt::semihosting::exit(1)
}

macro_rules! check {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            fail(format_args!($($arg)+));
        }
    };
}

struct Rng(u32);

impl Rng {
    fn next(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }
}

/// `count` frames for mapping, at a PA `offset` bytes past an `align`-aligned boundary (the
/// frames before it are handed back at once). The offset keeps a side from using a bigger
/// mapping size than the workload asks for.
fn data_frames(count: u32, align: u32, offset: u32) -> u32 {
    let skip = offset / PAGE;
    let Some(pa) = frames::alloc((count + skip) as usize, align as usize) else {
        fail(format_args!("out of memory for {count} data frames"));
    };
    if skip > 0 {
        frames::free(pa, skip as usize);
    }
    pa.as_u64() as u32 + offset
}

fn outstanding() -> usize {
    frames::stats().outstanding
}

fn check_chunks<S: Side>(s: &S, chunks: &[Chunk], mapped: bool, what: &str) {
    for c in chunks {
        for off in [0, c.bytes / 2 + 4, c.bytes - 4] {
            let got = s.translate(c.va + off);
            let want = mapped.then_some(c.pa + off);
            check!(
                got == want,
                "{} {what}: translate({:#x}) = {:x?}, expected {:x?}",
                S::NAME,
                c.va + off,
                got,
                want
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Workloads

/// Instructions and invalidates of one map + unmap workload.
#[derive(Clone, Copy, Default)]
struct MapUnmap {
    map: u64,
    unmap: u64,
    map_invalidates: u64,
    unmap_invalidates: u64,
}

impl MapUnmap {
    fn insns(&self) -> u64 {
        self.map + self.unmap
    }
    fn invalidates(&self) -> u64 {
        self.map_invalidates + self.unmap_invalidates
    }
}

fn map_unmap<S: Side>(chunks: &[Chunk], sizes: Sizes, floor: u32, ceiling: u32) -> MapUnmap {
    let base = outstanding()
        - chunks
            .iter()
            .map(|c| (c.bytes / PAGE) as usize)
            .sum::<usize>();
    let mut s = S::new();
    let inv0 = s.invalidates();
    let (map, ()) = timed(|| s.map(black_box(chunks), sizes));
    let inv1 = s.invalidates();
    check_chunks(&s, chunks, true, "after map");
    let mut ranges = [(0u32, 0u32); SCATTERED];
    check!(
        chunks.len() <= ranges.len(),
        "too many chunks for the range list"
    );
    for (r, c) in ranges.iter_mut().zip(chunks) {
        *r = (c.va, c.bytes);
    }
    let ranges = &ranges[..chunks.len()];
    let (unmap, ()) = timed(|| s.unmap_free(black_box(ranges), floor, ceiling));
    let inv2 = s.invalidates();
    check_chunks(&s, chunks, false, "after unmap");
    drop(s);
    check!(
        outstanding() == base,
        "{}: {} frames outstanding after the workload, {} before it",
        S::NAME,
        outstanding(),
        base
    );
    MapUnmap {
        map,
        unmap,
        map_invalidates: inv1 - inv0,
        unmap_invalidates: inv2 - inv1,
    }
}

fn dense_64<S: Side>() -> MapUnmap {
    let pa = data_frames(DENSE_BYTES / PAGE, MIB, PAGE);
    let chunk = Chunk {
        va: VA_WORK,
        pa,
        bytes: DENSE_BYTES,
    };
    map_unmap::<S>(&[chunk], Sizes::Pages, VA_WORK, VA_WORK + DENSE_BYTES)
}

/// Instructions and invalidates of protecting 64 MiB of 4 KiB pages read-only.
#[derive(Clone, Copy, Default)]
struct Protect {
    insns: u64,
    invalidates: u64,
}

fn protect_64<S: Side>() -> Protect {
    let base = outstanding();
    let pa = data_frames(DENSE_BYTES / PAGE, MIB, PAGE);
    let chunk = Chunk {
        va: VA_WORK,
        pa,
        bytes: DENSE_BYTES,
    };
    let mut s = S::new();
    s.map(&[chunk], Sizes::Pages);
    check!(s.writable(VA_WORK), "{}: not writable after map", S::NAME);
    let inv0 = s.invalidates();
    let (insns, ()) = timed(|| s.protect(black_box(VA_WORK), DENSE_BYTES));
    let invalidates = s.invalidates() - inv0;
    check_chunks(&s, &[chunk], true, "after protect");
    for off in [0, DENSE_BYTES / 2, DENSE_BYTES - PAGE] {
        check!(
            !s.writable(VA_WORK + off),
            "{}: {:#x} still writable after protect",
            S::NAME,
            VA_WORK + off
        );
    }
    let _ = s.teardown(&[(VA_WORK, DENSE_BYTES)]);
    check!(
        outstanding() == base,
        "{}: {} frames outstanding after protect, {} before",
        S::NAME,
        outstanding(),
        base
    );
    Protect { insns, invalidates }
}

/// The floor of unmap + flush + free of 64 MiB of 4 KiB pages: one store per descriptor
/// cleared (16,384 small-page entries and the 64 L1 entries of their tables), one TLB
/// operation (TLBIALL, with its barriers) and one allocator call per physically contiguous
/// run (the mapped frames are one run; the stand-in table memory another). No walk, no
/// decoding, no record.
fn floor_64() -> u64 {
    let pages = DENSE_BYTES / PAGE;
    let pa = data_frames(pages, MIB, PAGE);
    // Stand-in descriptors: 16 frames of L2 entries and one of L1 entries, all cleared.
    let tables = 17usize;
    let Some(t) = frames::alloc(tables, PAGE as usize) else {
        fail(format_args!("out of memory for the floor's tables"));
    };
    let l2 = t.as_u64() as usize as *mut u32;
    // SAFETY: 16 frames of RAM just allocated, identity-mapped.
    let l1 = unsafe { l2.add(16 * 1024) };
    let mut tlb =
        armv7_mm::tlb::Cp15Tlb::new(armv7_mm::tlb::Cp15, armv7_mm::tlb::Shareability::Local);
    let (insns, ()) = timed(|| {
        for i in 0..pages as usize {
            // SAFETY: inside the 16 frames allocated above.
            unsafe { l2.add(i).write_volatile(0) };
        }
        for i in 0..64 {
            // SAFETY: inside the 17th frame.
            unsafe { l1.add(i).write_volatile(0) };
        }
        use armv7_mm::TlbBackend;
        tlb.prepare();
        tlb.invalidate_all();
        tlb.complete();
        frames::free(armv7_mm::PhysAddr::new(u64::from(pa)), pages as usize);
        frames::free(t, tables);
    });
    insns
}

/// The 8 page indexes (distinct, in 0..16384) of the scattered workload.
fn scattered_pages() -> [u32; SCATTERED] {
    let mut rng = Rng(SEED);
    let mut out = [0u32; SCATTERED];
    let mut n = 0;
    while n < SCATTERED {
        let p = rng.next() % (DENSE_BYTES / PAGE);
        if !out[..n].contains(&p) {
            out[n] = p;
            n += 1;
        }
    }
    out
}

fn scattered_8<S: Side>() -> MapUnmap {
    let mut chunks = [Chunk {
        va: 0,
        pa: 0,
        bytes: PAGE,
    }; SCATTERED];
    for (c, p) in chunks.iter_mut().zip(scattered_pages()) {
        c.va = VA_WORK + p * PAGE;
        c.pa = data_frames(1, PAGE, 0);
    }
    map_unmap::<S>(&chunks, Sizes::Pages, VA_WORK, VA_WORK + DENSE_BYTES)
}

fn sections_16<S: Side>() -> MapUnmap {
    // 1 MiB past a 16 MiB boundary: sections, never a supersection.
    let pa = data_frames(SECTION_BYTES / PAGE, 16 * MIB, MIB);
    let chunk = Chunk {
        va: VA_WORK,
        pa,
        bytes: SECTION_BYTES,
    };
    map_unmap::<S>(&[chunk], Sizes::Sections, VA_WORK, VA_WORK + SECTION_BYTES)
}

/// Results of the 256 MiB address space.
#[derive(Clone, Copy, Default)]
struct Big {
    table_bytes: u64,
    map: u64,
    translate: u64,
    teardown: u64,
    teardown_invalidates: u64,
}

static LOOKUP_VAS: spin::Mutex<[u32; LOOKUPS]> = spin::Mutex::new([0; LOOKUPS]);

fn fill_lookups() {
    let mut rng = Rng(SEED ^ 0x9e37_79b9);
    let mut vas = LOOKUP_VAS.lock();
    for va in vas.iter_mut() {
        *va = VA_BIG + ((rng.next() % BIG_BYTES) & !3);
    }
}

fn big_256<S: Side>() -> Big {
    let base = outstanding();
    let pa = data_frames(BIG_BYTES / PAGE, MIB, PAGE);
    let chunk = Chunk {
        va: VA_BIG,
        pa,
        bytes: BIG_BYTES,
    };
    let before_tables = outstanding();
    let mut s = S::new();
    let (map, ()) = timed(|| s.map(black_box(&[chunk]), Sizes::Pages));
    let table_bytes = (outstanding() - before_tables) as u64 * u64::from(PAGE);
    check_chunks(&s, &[chunk], true, "after map");

    let vas = LOOKUP_VAS.lock();
    let want = vas
        .iter()
        .fold(0u32, |acc, &va| acc.wrapping_add(pa + (va - VA_BIG)));
    let (translate, got) = timed(|| {
        let s = black_box(&s);
        let mut sum = 0u32;
        for &va in vas.iter() {
            sum = sum.wrapping_add(s.translate(va).unwrap_or(0));
        }
        sum
    });
    drop(vas);
    check!(
        got == want,
        "{}: translate checksum {got:#x}, expected {want:#x}",
        S::NAME
    );

    let (teardown, teardown_invalidates) = timed(|| s.teardown(black_box(&[(VA_BIG, BIG_BYTES)])));
    check!(
        outstanding() == base,
        "{}: {} frames outstanding after teardown, {} before the mapping",
        S::NAME,
        outstanding(),
        base
    );
    Big {
        table_bytes,
        map,
        translate,
        teardown,
        teardown_invalidates,
    }
}

// ---------------------------------------------------------------------------------------
// armv7-mm: `short::AddressSpace`, unmapped through an `MmuGather` into the local ARMv7 TLB
// backend (the peer's flushes are local too: TLBIMVA / TLBIALL).

mod ours {
    use armv7_mm::arch::mmu::detect_features;
    use armv7_mm::gather::{GatherConfig, InFlight, MmuGather, Scope};
    use armv7_mm::short::{Access, AddressSpace, Attributes, Execute, Layout};
    use armv7_mm::tlb::{self, Cp15, Cp15Tlb};
    use armv7_mm::{
        Asid, ClearedLeaf, MapSize, PhysAddr, TlbBackend, UnmapSink, VirtAddr, VirtRange,
    };
    use core::hint::black_box;
    use rt::frames::{self, KernelMemory};
    use rt::println;

    use super::{
        data_frames, fail, per, timed, Chunk, Side, Sizes, BIG_BYTES, DENSE_BYTES, MIB, PAGE,
        VA_BIG, VA_WORK,
    };

    /// What the tables are used as here, and with which attributes: the peer maps kernel
    /// read/write data (global, never executable, write-back, shareable), and so do we.
    const ATTRS: Attributes = Attributes::KERNEL_DATA;
    /// The ASID a teardown names (the mappings are global, so it falls back to TLBIALL).
    const ASID: Asid = Asid(1);

    pub struct Ours {
        space: Option<AddressSpace<KernelMemory>>,
        tlb: Cp15Tlb,
        in_flight: InFlight,
    }

    fn range(va: u32, bytes: u32) -> VirtRange {
        VirtRange::from_start_len(VirtAddr::new(va), u64::from(bytes)).expect("range")
    }

    impl Ours {
        fn space(&mut self) -> &mut AddressSpace<KernelMemory> {
            self.space.as_mut().expect("live space")
        }
    }

    impl Side for Ours {
        const NAME: &'static str = "armv7-mm";

        fn new() -> Self {
            Ours {
                space: Some(
                    AddressSpace::new(KernelMemory, Layout::Whole, detect_features())
                        .expect("L1 table"),
                ),
                tlb: Cp15Tlb::new(Cp15, tlb::Shareability::Local),
                in_flight: InFlight::new(),
            }
        }

        fn map(&mut self, chunks: &[Chunk], sizes: Sizes) {
            let max = match sizes {
                Sizes::Pages => MapSize::Page4K,
                Sizes::Sections => MapSize::Section1M,
            };
            let space = self.space();
            for c in chunks {
                space
                    .map(
                        range(c.va, c.bytes),
                        PhysAddr::new(u64::from(c.pa)),
                        ATTRS,
                        max,
                    )
                    .expect("map");
            }
        }

        fn unmap_free(&mut self, ranges: &[(u32, u32)], floor: u32, ceiling: u32) {
            let space = self.space.as_mut().expect("live space");
            let mut g = MmuGather::new(Scope::Kernel, &mut self.tlb, KernelMemory, &self.in_flight);
            for &(va, bytes) in ranges {
                space.unmap(range(va, bytes), &mut g).expect("unmap");
            }
            for &(va, bytes) in ranges {
                space
                    .free_tables(range(va, bytes), range(floor, ceiling - floor), &mut g)
                    .expect("free_tables");
            }
            g.finish();
        }

        fn protect(&mut self, va: u32, bytes: u32) {
            let space = self.space.as_mut().expect("live space");
            let mut g = MmuGather::new(Scope::Kernel, &mut self.tlb, KernelMemory, &self.in_flight);
            space
                .protect(range(va, bytes), Access::KernelRo, Execute::Never, &mut g)
                .expect("protect");
            g.finish();
        }

        fn writable(&self, va: u32) -> bool {
            // `translate`, not `lookup`: a second caller would change how `lookup` is
            // inlined into the translate workload.
            self.space
                .as_ref()
                .expect("live space")
                .translate(VirtAddr::new(va))
                .is_some_and(|t| t.mapping.attrs.access == Access::KernelRw)
        }

        fn translate(&self, va: u32) -> Option<u32> {
            // The fast path (PA, access, leaf size), as the peer's `query` (PA, flags, size).
            self.space
                .as_ref()
                .expect("live space")
                .lookup(VirtAddr::new(va))
                .map(|t| t.pa.as_u64() as u32)
        }

        fn teardown(mut self, _ranges: &[(u32, u32)]) -> u64 {
            let before = self.tlb.counters();
            let space = self.space.take().expect("live space");
            let mut g = MmuGather::new(
                Scope::Teardown(ASID),
                &mut self.tlb,
                KernelMemory,
                &self.in_flight,
            );
            space.destroy(&mut g);
            g.finish();
            self.tlb.counters().since(&before).invalidates()
        }

        fn invalidates(&self) -> u64 {
            self.tlb.counters().invalidates()
        }
    }

    /// `arch::mmu::switch_context` between the boot table (`boot`, global sections) and an
    /// armv7-mm space mapping the same (RAM and the UART, identity, global): once with
    /// nothing owed, once with the ASID allocator's owed local flush, once onto what the
    /// CPU already runs. Returns (plain, with the flush, already there).
    pub fn switch(boot: usize) -> (u64, u64, u64) {
        let mut space =
            AddressSpace::new(KernelMemory, Layout::Whole, detect_features()).expect("L1 table");
        let ram = rt::ram_size();
        let base = frames::RAM_BASE;
        let r = VirtRange::from_start_len(VirtAddr::new(base as u32), ram).expect("RAM range");
        space
            .map(
                r,
                PhysAddr::new(base),
                Attributes::KERNEL_IMAGE,
                MapSize::Section1M,
            )
            .expect("map RAM");
        let uart = rt::console::UART_BASE as u32 & !(MIB - 1);
        space
            .map(
                range(uart, MIB),
                PhysAddr::new(u64::from(uart)),
                Attributes::DEVICE,
                MapSize::Section1M,
            )
            .expect("map UART");
        let boot = PhysAddr::new(boot as u64);
        let go = |root: PhysAddr, asid: u8, flush: bool| {
            // SAFETY: both tables map everything this CPU uses (RAM, the UART) identically
            // with global entries, for the short format of the live TTBCR.N = 0, and TTBR1
            // holds the boot table; no ASID has non-global entries.
            timed(|| unsafe { armv7_mm::arch::mmu::switch_context(root, Asid(asid), flush) })
        };
        let (plain, r1) = go(space.root(), 1, false);
        let (same, r2) = go(space.root(), 1, false);
        let (flushed, r3) = go(boot, 2, true);
        check!(
            r1.is_ok_and(|s| s.changed && !s.flushed_local)
                && r2.is_ok_and(|s| !s.changed)
                && r3.is_ok_and(|s| s.changed && s.flushed_local),
            "switch results {r1:?} {r2:?} {r3:?}"
        );
        // The space maps RAM that is not its to free: a memory that keeps mapped frames.
        let mut tlb = Cp15Tlb::new(Cp15, tlb::Shareability::Local);
        let in_flight = InFlight::new();
        let mut g = MmuGather::new(Scope::Teardown(ASID), &mut tlb, KeepMapped, &in_flight);
        space.destroy(&mut g);
        g.finish();
        (plain, flushed, same)
    }

    /// `KernelMemory` that hands table memory back but keeps mapped frames (an identity map
    /// of RAM the allocator owns).
    #[derive(Clone, Copy)]
    struct KeepMapped;

    // SAFETY: every method is `KernelMemory`'s, but `release_mapped`, which does nothing.
    unsafe impl armv7_mm::Memory for KeepMapped {
        fn allocate_frames(&mut self, count: usize, align: usize) -> Option<PhysAddr> {
            KernelMemory.allocate_frames(count, align)
        }
        fn free_frames(&mut self, pa: PhysAddr, count: usize) {
            KernelMemory.free_frames(pa, count)
        }
        fn phys_to_virt(&self, pa: PhysAddr) -> core::ptr::NonNull<u8> {
            KernelMemory.phys_to_virt(pa)
        }
        fn release_mapped(&mut self, _: VirtAddr, _: PhysAddr, _: usize) {}
    }

    /// A sink that only counts: the walker's own cost, with nothing recorded or freed.
    struct Null(u32);

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

    /// Where armv7-mm's instructions go (not a comparison, so only `info` lines): the
    /// 64 MiB zap into a sink that does nothing, the allocator's own cost per frame freed
    /// (both sides pay it), and a 256 MiB teardown with more batch frames than the default.
    pub fn breakdown() {
        let pages = DENSE_BYTES / PAGE;
        let pa = data_frames(pages, MIB, PAGE);
        let mut s = Ours::new();
        let chunk = Chunk {
            va: VA_WORK,
            pa,
            bytes: DENSE_BYTES,
        };
        s.map(&[chunk], Sizes::Pages);
        let mut null = Null(0);
        let space = s.space();
        let (zap, cleared) =
            timed(|| space.unmap(range(VA_WORK, DENSE_BYTES), black_box(&mut null)));
        check!(
            cleared == Ok(pages as usize) && null.0 == pages,
            "null-sink zap cleared {cleared:?}"
        );
        let (free, ()) = timed(|| {
            for i in 0..pages {
                frames::free(PhysAddr::new(u64::from(pa + i * PAGE)), 1);
            }
        });
        let (tables, freed) = timed(|| {
            let mut g = MmuGather::new(Scope::Kernel, &mut s.tlb, KernelMemory, &s.in_flight);
            let space = s.space.as_mut().expect("live space");
            let r = range(VA_WORK, DENSE_BYTES);
            let n = space.free_tables(r, r, &mut g);
            g.finish();
            n
        });
        check!(freed == Ok(16), "free_tables freed {freed:?}");
        drop(s);

        // The gather alone: the reports an unmap of 64 MiB makes, then finish (which frees
        // the frames: take the allocator's share off to see the gather's own).
        let pa = data_frames(pages, MIB, PAGE);
        let mut tlb = Cp15Tlb::new(Cp15, tlb::Shareability::Local);
        let in_flight = InFlight::new();
        let (gather, ()) = timed(|| {
            let mut g = MmuGather::new(Scope::Kernel, &mut tlb, KernelMemory, &in_flight);
            for i in 0..pages {
                g.leaf_cleared(ClearedLeaf {
                    va: VirtAddr::new(VA_WORK + i * PAGE),
                    size: MapSize::Page4K,
                    pa: PhysAddr::new(u64::from(pa + i * PAGE)),
                    global: true,
                    executable: false,
                });
            }
            g.finish();
        });
        println!(
            "info armv7-mm breakdown, 64MiB of 4K pages, insns/page: zap into a do-nothing sink {}; \
             free_tables + its flush {}; gather alone (16384 reports + finish, the frames \
             handed back as one run) {}; frames::free one frame at a time (as the peer's \
             frames are) {}",
            per(zap, u64::from(pages)),
            per(tables, u64::from(pages)),
            per(gather, u64::from(pages)),
            per(free, u64::from(pages))
        );

        // The scattered workload's unmap, step by step.
        let mut s = Ours::new();
        let mut chunks = [Chunk {
            va: 0,
            pa: 0,
            bytes: PAGE,
        }; super::SCATTERED];
        for (c, p) in chunks.iter_mut().zip(super::scattered_pages()) {
            c.va = VA_WORK + p * PAGE;
            c.pa = data_frames(1, PAGE, 0);
        }
        s.map(&chunks, Sizes::Pages);
        let space = s.space.as_mut().expect("live space");
        let mut g = MmuGather::new(Scope::Kernel, &mut s.tlb, KernelMemory, &s.in_flight);
        let (zap, ()) = timed(|| {
            for c in &chunks {
                space.unmap(range(c.va, PAGE), &mut g).expect("unmap");
            }
        });
        let (free_tables, ()) = timed(|| {
            for c in &chunks {
                space
                    .free_tables(range(c.va, PAGE), range(VA_WORK, DENSE_BYTES), &mut g)
                    .expect("free_tables");
            }
        });
        let (finish, _) = timed(|| g.finish());
        println!(
            "info armv7-mm breakdown, 8 scattered pages, insns/page: unmap {}; free_tables {}; \
             finish (flush, then 8 pages and their tables freed) {}",
            per(zap, super::SCATTERED as u64),
            per(free_tables, super::SCATTERED as u64),
            per(finish, super::SCATTERED as u64)
        );
        drop(s);

        let big_pages = BIG_BYTES / PAGE;
        let pa = data_frames(big_pages, MIB, PAGE);
        let mut s = Ours::new();
        let chunk = Chunk {
            va: VA_BIG,
            pa,
            bytes: BIG_BYTES,
        };
        s.map(&[chunk], Sizes::Pages);
        let before = s.tlb.counters();
        let space = s.space.take().expect("live space");
        let config = GatherConfig {
            max_batch_frames: 65,
            ..GatherConfig::DEFAULT
        };
        let (teardown, report) = timed(|| {
            let mut g = MmuGather::with_config(
                Scope::Teardown(ASID),
                &mut s.tlb,
                KernelMemory,
                &s.in_flight,
                config,
            );
            space.destroy(&mut g);
            g.finish()
        });
        println!(
            "info armv7-mm breakdown: 256MiB teardown with max_batch_frames=65 (default 9) \
             {} insns/page, {} invalidates, {} flushes",
            per(teardown, u64::from(big_pages)),
            s.tlb.counters().since(&before).invalidates(),
            report.flushes
        );
    }

    impl Drop for Ours {
        /// An address space must be destroyed (its tables may be live); not measured.
        fn drop(&mut self) {
            if let Some(space) = self.space.take() {
                let mut g = MmuGather::new(
                    Scope::Teardown(ASID),
                    &mut self.tlb,
                    KernelMemory,
                    &self.in_flight,
                );
                space.destroy(&mut g);
                g.finish();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The peer: page_table_multiarch 0.6.2, `PageTable32` with the ARMv7 short-descriptor PTE.

mod peer {
    use core::sync::atomic::{AtomicU32, Ordering};

    use memory_addr::{PhysAddr as PeerPa, VirtAddr as PeerVa};
    use page_table_entry::arm::A32PTE;
    use page_table_entry::MappingFlags;
    use page_table_multiarch::arm::A32PagingMetaData;
    use page_table_multiarch::{PageSize, PageTable32, PagingHandler, PagingMetaData};

    use super::{Chunk, Side, Sizes, MIB, PAGE};
    use rt::frames;

    /// The peer's `PagingHandler` (static, no `self`) over the same allocator as ours.
    pub struct RtFrames;

    impl PagingHandler for RtFrames {
        fn alloc_frames(num: usize, align: usize) -> Option<PeerPa> {
            frames::alloc(num, align).map(|pa| PeerPa::from(pa.as_u64() as usize))
        }
        fn dealloc_frames(paddr: PeerPa, num: usize) {
            frames::free(armv7_mm::PhysAddr::new(paddr.as_usize() as u64), num)
        }
        fn phys_to_virt(paddr: PeerPa) -> PeerVa {
            // RAM is identity-mapped.
            PeerVa::from(paddr.as_usize())
        }
    }

    /// TLB invalidates the peer issued: each `flush_tlb(Some(va))` is one TLBIMVA, each
    /// `flush_tlb(None)` one TLBIALL (each followed by its own `dsb; isb`).
    static FLUSH_VA: AtomicU32 = AtomicU32::new(0);
    static FLUSH_ALL: AtomicU32 = AtomicU32::new(0);

    /// The peer's own ARMv7 metadata (`A32PagingMetaData`), with its `flush_tlb` counted. The
    /// page table is generic over this type, so the peer's code runs unchanged; only the
    /// count is added around its flush.
    pub struct CountingA32;

    impl PagingMetaData for CountingA32 {
        const LEVELS: usize = A32PagingMetaData::LEVELS;
        const PA_MAX_BITS: usize = A32PagingMetaData::PA_MAX_BITS;
        const VA_MAX_BITS: usize = A32PagingMetaData::VA_MAX_BITS;
        type VirtAddr = PeerVa;

        fn vaddr_is_valid(vaddr: usize) -> bool {
            A32PagingMetaData::vaddr_is_valid(vaddr)
        }

        fn flush_tlb(vaddr: Option<PeerVa>) {
            let counter = if vaddr.is_some() {
                &FLUSH_VA
            } else {
                &FLUSH_ALL
            };
            counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
            A32PagingMetaData::flush_tlb(vaddr)
        }
    }

    type Table = PageTable32<CountingA32, A32PTE, RtFrames>;

    /// Frames unmapped but not yet flushed: PA | 1 for a 1 MiB section.
    static PENDING: spin::Mutex<[u32; 65536]> = spin::Mutex::new([0; 65536]);

    const FLAGS: MappingFlags = MappingFlags::READ.union(MappingFlags::WRITE);

    pub struct Peer(Table);

    /// The peer's switch between two tables: it has no ASIDs, so a kernel writes `TTBR0` and
    /// calls the peer's `flush_tlb(None)` (TLBIALL; `dsb`; `isb`). Returns the instructions of
    /// one switch (onto the boot table `boot`).
    pub fn switch(boot: usize) -> u64 {
        use armv7_mm::arch::cp15::TTBR0;
        use tock_registers::interfaces::Writeable;
        // The table switched to does not change the cost: the boot table (it maps the
        // same), so the peer's own table code is not instantiated a second time here.
        let root = boot as u32;
        super::timed(|| {
            TTBR0.set(root | rt::mmu::TTBR_WALK_ATTRS);
            CountingA32::flush_tlb(None);
        })
        .0
    }

    /// Invalidates so far.
    pub fn flushes() -> (u32, u32) {
        (
            FLUSH_VA.load(Ordering::Relaxed),
            FLUSH_ALL.load(Ordering::Relaxed),
        )
    }

    impl Side for Peer {
        const NAME: &'static str = "page_table_multiarch";

        fn new() -> Self {
            Peer(Table::try_new().expect("peer L1"))
        }

        fn map(&mut self, chunks: &[Chunk], sizes: Sizes) {
            // One cursor for the whole batch; it flushes the VAs it recorded when dropped.
            let mut c = self.0.cursor();
            for ch in chunks {
                let (va, pa) = (ch.va as usize, ch.pa as usize);
                c.map_region(
                    PeerVa::from(va),
                    |v| PeerPa::from(pa + (v.as_usize() - va)),
                    ch.bytes as usize,
                    FLAGS,
                    sizes == Sizes::Sections,
                )
                .expect("peer map_region");
            }
        }

        fn unmap_free(&mut self, ranges: &[(u32, u32)], _floor: u32, _ceiling: u32) {
            // `unmap` hands back each PA; the frames may only be freed after the cursor's
            // flush, so they wait in a list (what a gather does, by hand). The peer has no
            // way to free an empty L2 table before the whole table is dropped.
            let mut pending = PENDING.lock();
            let mut n = 0;
            {
                let mut c = self.0.cursor();
                for &(start, bytes) in ranges {
                    let mut va = start as usize;
                    let end = va + bytes as usize;
                    while va < end {
                        let (pa, _, size) = c.unmap(PeerVa::from(va)).expect("peer unmap");
                        pending[n] = pa.as_usize() as u32 | u32::from(size == PageSize::Size1M);
                        n += 1;
                        va += size as usize;
                    }
                }
            } // cursor dropped: TLB flushed
            for &e in &pending[..n] {
                let frames = if e & 1 != 0 { MIB / PAGE } else { 1 };
                frames::free(armv7_mm::PhysAddr::new(u64::from(e & !1)), frames as usize);
            }
        }

        fn protect(&mut self, va: u32, bytes: u32) {
            // One cursor; it flushes the VAs it recorded (or everything past 32) on drop.
            let mut c = self.0.cursor();
            c.protect_region(
                PeerVa::from(va as usize),
                bytes as usize,
                MappingFlags::READ,
            )
            .expect("peer protect_region");
        }

        fn writable(&self, va: u32) -> bool {
            // Read from the descriptor itself (short-descriptor small page: AP[2] is bit 9,
            // AP[1:0] bits 5:4): the peer's `query` decodes a small page's AP bits from the
            // section positions (bits 15, 11:10), so its flags cannot tell.
            let l1 = self.0.root_paddr().as_usize() as *const u32;
            // SAFETY: the peer's L1 table (16 KiB, identity-mapped RAM) and, through a
            // page-table entry, its 1 KiB L2 table; read only.
            unsafe {
                let e = l1.add((va >> 20) as usize).read_volatile();
                if e & 0b11 != 0b01 {
                    return false;
                }
                let l2 = (e & !0x3ff) as usize as *const u32;
                let p = l2.add(((va >> 12) & 0xff) as usize).read_volatile();
                p & 0b10 != 0 && p & (1 << 9) == 0 && (p >> 4) & 0b11 != 0
            }
        }

        fn translate(&self, va: u32) -> Option<u32> {
            self.0
                .query(PeerVa::from(va as usize))
                .ok()
                .map(|(pa, _, _)| pa.as_usize() as u32)
        }

        fn teardown(self, ranges: &[(u32, u32)]) -> u64 {
            // The peer's cheapest correct teardown: the address space is dead, so one full
            // flush, then find each mapped frame with `query` and free it, then drop the
            // table (which frees its L2 tables and L1). No entry needs clearing.
            let before = flushes();
            CountingA32::flush_tlb(None);
            for &(start, bytes) in ranges {
                let mut va = start as usize;
                let end = va + bytes as usize;
                while va < end {
                    match self.0.query(PeerVa::from(va)) {
                        Ok((pa, _, size)) => {
                            frames::free(
                                armv7_mm::PhysAddr::new(pa.as_usize() as u64),
                                size as usize / PAGE as usize,
                            );
                            va += size as usize;
                        }
                        Err(_) => va += PAGE as usize,
                    }
                }
            }
            drop(self);
            let after = flushes();
            u64::from((after.0 - before.0) + (after.1 - before.1))
        }

        fn invalidates(&self) -> u64 {
            let (va, all) = flushes();
            u64::from(va + all)
        }
    }
}

// ---------------------------------------------------------------------------------------

/// Everything measured for one side.
#[derive(Clone, Copy)]
struct Results {
    dense: MapUnmap,
    scattered: MapUnmap,
    sections: MapUnmap,
    big: Big,
    protect: Protect,
    /// One context switch (for the peer its TTBR0 write + TLBIALL).
    switch: u64,
}

fn run<S: Side>(switch: u64) -> Results {
    Results {
        dense: dense_64::<S>(),
        scattered: scattered_8::<S>(),
        sections: sections_16::<S>(),
        big: big_256::<S>(),
        protect: protect_64::<S>(),
        switch,
    }
}

/// Per-unit value, rounded to the nearest integer.
fn per(total: u64, units: u64) -> u64 {
    (total + units / 2) / units
}

fn line(workload: &str, ours: Option<u64>, peer: u64, unit: &str) {
    match ours {
        Some(n) => println!("bench {workload}: armv7-mm={n} page_table_multiarch={peer} {unit}"),
        None => println!("bench {workload}: armv7-mm=n/a page_table_multiarch={peer} {unit}"),
    }
}

/// Workload, unit, the total it is computed from, and what the total is divided by.
type Row = (&'static str, &'static str, fn(&Results) -> u64, u64);

fn report(ours: Option<&Results>, peer: &Results) {
    let pages = u64::from(DENSE_BYTES / PAGE);
    let sections = u64::from(SECTION_BYTES / MIB);
    let big_pages = u64::from(BIG_BYTES / PAGE);
    let scattered = SCATTERED as u64;
    let rows: [Row; 15] = [
        ("map-64MiB-4K", "insns/page", |r| r.dense.map, pages),
        (
            "unmap-flush-free-64MiB-4K",
            "insns/page",
            |r| r.dense.unmap,
            pages,
        ),
        (
            "map-unmap-64MiB-4K",
            "insns/page",
            |r| r.dense.insns(),
            pages,
        ),
        (
            "map-unmap-64MiB-4K",
            "invalidates",
            |r| r.dense.invalidates(),
            1,
        ),
        (
            "map-unmap-8-scattered-in-64MiB",
            "insns/page",
            |r| r.scattered.insns(),
            scattered,
        ),
        (
            "map-unmap-8-scattered-in-64MiB",
            "invalidates",
            |r| r.scattered.invalidates(),
            1,
        ),
        (
            "map-unmap-16MiB-sections",
            "insns/page",
            |r| r.sections.insns(),
            sections,
        ),
        (
            "map-unmap-16MiB-sections",
            "invalidates",
            |r| r.sections.invalidates(),
            1,
        ),
        (
            "translate-100000-random",
            "insns/lookup",
            |r| r.big.translate,
            LOOKUPS as u64,
        ),
        (
            "teardown-256MiB",
            "insns/page",
            |r| r.big.teardown,
            big_pages,
        ),
        (
            "teardown-256MiB",
            "invalidates",
            |r| r.big.teardown_invalidates,
            1,
        ),
        ("table-memory-256MiB", "bytes", |r| r.big.table_bytes, 1),
        ("protect-64MiB-4K", "insns/page", |r| r.protect.insns, pages),
        (
            "protect-64MiB-4K",
            "invalidates",
            |r| r.protect.invalidates,
            1,
        ),
        ("context-switch", "insns/switch", |r| r.switch, 1),
    ];
    for (workload, unit, value, units) in rows {
        line(
            workload,
            ours.map(|r| per(value(r), units)),
            per(value(peer), units),
            unit,
        );
    }
    for (name, r) in [("armv7-mm", ours), ("page_table_multiarch", Some(peer))] {
        let Some(r) = r else { continue };
        println!(
            "info {name}: 64MiB map {} unmap {} insns, invalidates {}+{}; \
             scattered map {} unmap {} insns, invalidates {}+{}; \
             sections map {} unmap {} insns, invalidates {}+{}; \
             256MiB map {} translate {} teardown {} insns",
            r.dense.map,
            r.dense.unmap,
            r.dense.map_invalidates,
            r.dense.unmap_invalidates,
            r.scattered.map,
            r.scattered.unmap,
            r.scattered.map_invalidates,
            r.scattered.unmap_invalidates,
            r.sections.map,
            r.sections.unmap,
            r.sections.map_invalidates,
            r.sections.unmap_invalidates,
            r.big.map,
            r.big.translate,
            r.big.teardown
        );
    }
}

fn main() -> ! {
    let boot_l1 = rt::mmu::enable_identity(rt::ram_size());
    pmu::init();
    check!(pmu::running(), "the cycle counter does not run");
    calibrate();
    let t0 = pmu::cycles();
    let mut x = 0u32;
    for k in 0..1000u32 {
        x = black_box(x.wrapping_add(k));
    }
    let t1 = pmu::cycles();
    black_box(x);
    println!(
        "info pmu: counter-read overhead {} cycles (taken off every reading), a 1000-iteration loop {} cycles",
        OVERHEAD.load(Ordering::Relaxed),
        t1.wrapping_sub(t0)
    );
    println!(
        "info config: RAM {} MiB, {} frames free, cmdline '{}'",
        rt::ram_size() >> 20,
        frames::stats().total - outstanding(),
        rt::cmdline()
    );
    fill_lookups();

    let (switch, switch_flush, switch_same) = ours::switch(boot_l1);
    let peer_switch = peer::switch(boot_l1);
    let ours = run::<ours::Ours>(switch);
    let peer = run::<peer::Peer>(peer_switch);
    let floor = floor_64();
    report(Some(&ours), &peer);
    let pages = u64::from(DENSE_BYTES / PAGE);
    println!(
        "info floor: unmap+flush+free 64MiB (16448 descriptor stores, 1 TLBIALL, 2 allocator \
         calls) {} insns = {} insns/page; armv7-mm {} insns/page = {}.{:03}x the floor",
        floor,
        per(floor, pages),
        per(ours.dense.unmap, pages),
        ours.dense.unmap / floor,
        (ours.dense.unmap % floor) * 1000 / floor
    );
    println!(
        "info context switch, insns: armv7-mm switch_context {switch}, with the owed local \
         flush {switch_flush}, onto the running table and ASID {switch_same}; \
         page_table_multiarch (no ASIDs: TTBR0 write + flush_tlb(None)) {peer_switch}"
    );
    ours::breakdown();
    println!("bench done");
    rt::semihosting::exit(0)
}

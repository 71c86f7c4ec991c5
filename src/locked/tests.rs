//! Host tests of the lock types: foreign gathers refused, overlapping gathers fall back to
//! a whole-ASID flush, lockless walks are refused without matching epochs, and a table is
//! never freed under a lockless walker (with teeth: the same walk without the sync reads a
//! freed table). Each scenario is one generic function run for both descriptor formats
//! (`short` and `lpae` tests of the same name).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::vec::Vec;

use super::*;
use crate::gather::Fallback;
use crate::lpae::Lpae;
use crate::short::host::HostMemory;
use crate::tlb::{Asid, TlbCounters};

/// A format the scenarios run over, with the features to create its spaces with.
trait TestFormat: Format {
    fn features() -> Self::Features;
}

impl TestFormat for Short {
    fn features() -> crate::short::Features {
        crate::short::Features::ALL
    }
}

impl TestFormat for Lpae {
    fn features() -> crate::lpae::Features {
        crate::lpae::Features::ALL
    }
}

/// `#[test] fn short` and `#[test] fn lpae` in a module named after the scenario, each
/// running the generic scenario function of that name in its format.
macro_rules! both_formats {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn short() {
                super::$name::<crate::short::Short>();
            }
            #[test]
            fn lpae() {
                super::$name::<crate::lpae::Lpae>();
            }
        }
    )*};
}

both_formats!(
    a_gather_of_another_space_is_refused_and_nothing_is_cleared,
    errors_of_the_walkers_come_through_typed,
    overlapping_gathers_fall_back_to_whole_asid_at_finish,
    two_threads_zapping_disjoint_ranges_at_once,
    lockless_walks_need_the_spaces_own_epochs,
    a_table_is_not_freed_under_a_lockless_walker,
    teeth_without_the_sync_the_walker_reads_a_freed_table,
    lockless_walks_agree_with_the_locked_translate,
);

/// A backend that only counts (the host has no TLB; ordering is tested in `gather`).
#[derive(Default)]
struct Counting(TlbCounters);

impl TlbBackend for Counting {
    fn prepare(&mut self) {
        self.0.prepares += 1
    }
    fn invalidate_va(&mut self, _: VirtAddr, _: Asid) {
        self.0.va += 1
    }
    fn invalidate_va_all_asids(&mut self, _: VirtAddr) {
        self.0.va_all_asids += 1
    }
    fn invalidate_asid(&mut self, _: Asid) {
        self.0.asid += 1
    }
    fn invalidate_all(&mut self) {
        self.0.all += 1
    }
    fn invalidate_branch_predictor(&mut self) {
        self.0.branch_predictor += 1
    }
    fn complete(&mut self) {
        self.0.completions += 1
    }
    fn counters(&self) -> TlbCounters {
        self.0
    }
}

const MIB: u32 = 1 << 20;

fn range(start: u32, len: u64) -> VirtRange {
    VirtRange::from_start_len(VirtAddr::new(start), len).unwrap()
}

fn user_space<F: TestFormat>(mem: &HostMemory) -> LockedAddressSpace<HostMemory, F> {
    let space = AddressSpace::new(mem.clone(), Layout::User { n: 2 }, F::features()).unwrap();
    LockedAddressSpace::new(space)
}

/// Walk epochs of one test alone (leaked: a space keeps a `'static` reference).
fn leaked_epochs<const CPUS: usize>() -> &'static WalkEpochs<CPUS> {
    std::boxed::Box::leak(std::boxed::Box::new(WalkEpochs::new()))
}

/// Maps `pages` fresh frames from `mem` at `va`.
fn map_pages<F: Format>(
    s: &LockedAddressSpace<HostMemory, F>,
    mem: &HostMemory,
    va: u32,
    pages: u32,
) {
    let mut m = mem.clone();
    let mut g = s.lock();
    for i in 0..pages {
        let pa = m.allocate_frames(1, 4096).unwrap();
        g.map(
            range(va + i * 4096, 4096),
            pa,
            Attributes::USER_DATA,
            MapSize::Page4K,
        )
        .unwrap();
    }
}

fn a_gather_of_another_space_is_refused_and_nothing_is_cleared<F: TestFormat>() {
    let mem = HostMemory::new();
    let a = user_space::<F>(&mem);
    let b = user_space::<F>(&mem);
    map_pages(&a, &mem, 0x1000_0000, 4);
    let mut gb = b.gather(Counting::default(), mem.clone());
    {
        let mut guard = a.lock();
        let r = guard.unmap(range(0x1000_0000, 4 * 4096), &mut gb);
        assert_eq!(r, Err(ZapError::ForeignGather));
        let r = guard.free_tables(
            range(0x1000_0000, 4 * MIB as u64),
            VirtRange::floor_ceiling(VirtAddr::new(0x1000_0000), 0x1040_0000),
            &mut gb,
        );
        assert_eq!(r, Err(ZapError::ForeignGather));
        assert!(guard.translate(VirtAddr::new(0x1000_0000)).is_some());
    }
    let rep = gb.finish();
    assert_eq!(rep.leaves_cleared, 0);
    // The right gather works, and frees everything after its flush.
    let before = mem.outstanding();
    let mut ga = a.gather(Counting::default(), mem.clone());
    let n = a
        .lock()
        .unmap(range(0x1000_0000, 4 * 4096), &mut ga)
        .unwrap();
    assert_eq!(n, 4);
    let rep = ga.finish();
    assert_eq!(rep.leaves_released, 4);
    assert_eq!(mem.outstanding(), before - 4);
}

fn errors_of_the_walkers_come_through_typed<F: TestFormat>() {
    let mem = HostMemory::new();
    let a = user_space::<F>(&mem);
    let mut g = a.gather(Counting::default(), mem.clone());
    let mut guard = a.lock();
    // Above the 1 GiB this TTBR0 table translates.
    assert_eq!(
        guard.unmap(range(0x8000_0000, 4096), &mut g),
        Err(ZapError::Unmap(UnmapError::OutOfRange))
    );
    assert_eq!(
        guard.free_tables(
            range(0x1000_0000, 4096),
            VirtRange::floor_ceiling(VirtAddr::new(0x1000_1000), 0x2000_0000),
            &mut g
        ),
        Err(ZapError::FreeTables(FreeTablesError::BadBounds))
    );
    drop(guard);
    let _ = g.finish();
}

fn overlapping_gathers_fall_back_to_whole_asid_at_finish<F: TestFormat>() {
    let mem = HostMemory::new();
    let a = user_space::<F>(&mem);
    map_pages(&a, &mem, 0x1000_0000, 8);
    // Two gathers open at once, each zapping its own half with the lock dropped between.
    let mut g1 = a.gather(Counting::default(), mem.clone());
    a.lock()
        .unmap(range(0x1000_0000, 4 * 4096), &mut g1)
        .unwrap();
    let mut g2 = a.gather(Counting::default(), mem.clone());
    a.lock()
        .unmap(range(0x1000_4000, 4 * 4096), &mut g2)
        .unwrap();
    assert_eq!(a.in_flight().current(), 2);
    let r1 = g1.finish();
    assert_eq!(r1.fallback, Some(Fallback::Nested), "{r1}");
    assert_eq!(r1.invalidates.va, 0);
    assert_eq!(r1.invalidates.asid + r1.invalidates.all, 1);
    let r2 = g2.finish();
    assert_eq!(r2.fallback, None, "the last one trusts its record");
    assert_eq!(r2.invalidates.va, 4);
    assert_eq!(a.in_flight().current(), 0);
}

fn two_threads_zapping_disjoint_ranges_at_once<F: TestFormat>() {
    // As on the SMP boot test: two CPUs zap their own range of one space, both gathers
    // open when either finishes; every round one of them falls back, nothing is lost.
    let mem = HostMemory::new();
    let a = Arc::new(user_space::<F>(&mem));
    let start = mem.outstanding();
    let rounds = 50;
    let barrier = Arc::new(Barrier::new(2));
    let nested = Arc::new(AtomicU32::new(0));
    let workers: Vec<_> = (0..2u32)
        .map(|t| {
            let (a, mem, barrier, nested) =
                (a.clone(), mem.clone(), barrier.clone(), nested.clone());
            thread::spawn(move || {
                let base = 0x1000_0000 + t * 8 * MIB;
                for _ in 0..rounds {
                    map_pages(&a, &mem, base, 16);
                    let mut g = a.gather(Counting::default(), mem.clone());
                    a.lock().unmap(range(base, 16 * 4096), &mut g).unwrap();
                    barrier.wait(); // both gathers are open
                    let r = g.finish();
                    if r.fallback == Some(Fallback::Nested) {
                        nested.fetch_add(1, Ordering::SeqCst);
                    }
                    assert_eq!(r.leaves_released, 16);
                    barrier.wait();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let n = nested.load(Ordering::SeqCst);
    assert!(n >= rounds, "only {n} nested fallbacks in {rounds} rounds");
    // Only the tables remain (mapped frames all freed).
    let a = Arc::try_unwrap(a).ok().unwrap();
    let d = a.destroy(Counting::default(), mem.clone());
    assert_eq!(d.report.fallback, Some(Fallback::Teardown));
    assert_eq!(
        mem.outstanding(),
        start - 1,
        "the L1 table of the space went too"
    );
}

fn lockless_walks_need_the_spaces_own_epochs<F: TestFormat>() {
    // Epochs of this call alone (a static in a generic function would be shared by both
    // formats' tests, which run in parallel).
    let epochs: &'static WalkEpochs<2> = leaked_epochs();
    let other: &'static WalkEpochs<2> = leaked_epochs();
    let mem = HostMemory::new();
    let plain = user_space::<F>(&mem);
    map_pages(&plain, &mem, 0x1000_0000, 1);
    let g = epochs.enter(0).unwrap();
    let va = VirtAddr::new(0x1000_0000);
    assert_eq!(
        plain.translate_lockless(va, &g, &mem),
        Err(LocklessError::NotSynced)
    );
    let synced = user_space::<F>(&mem).with_lockless_walkers(epochs);
    map_pages(&synced, &mem, 0x1000_0000, 1);
    let leaf = synced.translate_lockless(va, &g, &mem).unwrap().unwrap();
    let locked = synced.lock().translate(va).unwrap();
    assert_eq!(leaf.pa, locked.pa);
    assert_eq!(leaf.size, MapSize::Page4K);
    assert!(leaf.table.is_some());
    assert_eq!(
        synced.translate_lockless(VirtAddr::new(0x1000_1000), &g, &mem),
        Ok(None)
    );
    drop(g);
    let h = other.enter(0).unwrap();
    assert_eq!(
        synced.translate_lockless(va, &h, &mem),
        Err(LocklessError::NotSynced)
    );
    // An IPI-style sync replaces the epochs: lockless walks through this module stop.
    let ipi: &'static crate::gather::NoTableSync = &crate::gather::NoTableSync;
    let s = synced.with_table_sync(ipi);
    assert_eq!(
        s.translate_lockless(va, &h, &mem),
        Err(LocklessError::NotSynced)
    );
}

/// One walker thread parks between the L1 and L2 reads of a walk while the main thread
/// unmaps and frees the table under it; returns what the walk finally read and whether
/// the free finished while the walker was still inside.
fn walk_while_table_freed<F: TestFormat>(sync_tables: bool) -> (Option<LocklessLeaf>, bool) {
    // Epochs of this call alone (tests run in parallel).
    let epochs: &'static WalkEpochs<2> = leaked_epochs();
    let mem = HostMemory::new();
    let mut space = user_space::<F>(&mem).with_lockless_walkers(epochs);
    if !sync_tables {
        // The bug: table memory freed without waiting for lockless walkers.
        space.table_sync = None;
    }
    let space = Arc::new(space);
    map_pages(&space, &mem, 0x1000_0000, 1);
    let inside = Arc::new(AtomicBool::new(false));
    let go = Arc::new(AtomicBool::new(false));
    let freed_early = Arc::new(AtomicBool::new(false));
    let walker = {
        let (space, mem, inside, go) = (space.clone(), mem.clone(), inside.clone(), go.clone());
        thread::spawn(move || {
            let g = epochs.enter(1).unwrap();
            let r =
                space.translate_lockless_with(VirtAddr::new(0x1000_0000), &g, &mem, &mut || {
                    inside.store(true, Ordering::SeqCst);
                    while !go.load(Ordering::SeqCst) {
                        thread::yield_now();
                    }
                });
            drop(g);
            r.unwrap()
        })
    };
    while !inside.load(Ordering::SeqCst) {
        thread::yield_now();
    }
    let zapper = {
        let (space, mem, freed_early, go) =
            (space.clone(), mem.clone(), freed_early.clone(), go.clone());
        thread::spawn(move || {
            let mut g = space.gather(Counting::default(), mem.clone());
            {
                let mut guard = space.lock();
                guard.unmap(range(0x1000_0000, 4096), &mut g).unwrap();
                guard
                    .free_tables(
                        range(0x1000_0000, 4 * MIB as u64),
                        VirtRange::floor_ceiling(VirtAddr::new(0x1000_0000), 0x1040_0000),
                        &mut g,
                    )
                    .unwrap();
            }
            let r = g.finish();
            assert_eq!(r.table_frames_freed, 1);
            // Reuse the freed table frame at once, as a new owner would (HostMemory
            // hands freed blocks out again first, already poisoned).
            freed_early.store(!go.load(Ordering::SeqCst), Ordering::SeqCst);
            r
        })
    };
    // Give the zapper every chance to free the table under the walker.
    for _ in 0..200 {
        if zapper.is_finished() {
            break;
        }
        thread::sleep(std::time::Duration::from_millis(1));
    }
    go.store(true, Ordering::SeqCst);
    let leaf = walker.join().unwrap();
    let rep = zapper.join().unwrap();
    assert_eq!(rep.table_syncs, u32::from(sync_tables));
    (leaf, freed_early.load(Ordering::SeqCst))
}

fn a_table_is_not_freed_under_a_lockless_walker<F: TestFormat>() {
    let (leaf, freed_early) = walk_while_table_freed::<F>(true);
    assert!(
        !freed_early,
        "the table was freed while the walker was inside"
    );
    // The walk finished on the table as it was when it entered: the old page (the
    // unmap's clear may or may not be seen, but never garbage).
    if let Some(l) = leaf {
        assert_eq!(l.size, MapSize::Page4K);
        assert_ne!(
            l.pa.as_u64() as u32 & !0xfff,
            0xdead_b000,
            "read a freed table"
        );
    }
}

fn teeth_without_the_sync_the_walker_reads_a_freed_table<F: TestFormat>() {
    let (leaf, freed_early) = walk_while_table_freed::<F>(false);
    assert!(freed_early, "the free did not overtake the walker");
    // HostMemory poisons freed frames with 0xdeadbeef: read as a descriptor (short: one
    // word; long: the word twice), a small page whose PA ends in 0xdeadb000.
    let leaf = leaf.expect("the poisoned word decodes as a mapping");
    assert_eq!(leaf.pa.as_u64() as u32 & !0xfff, 0xdead_b000);
}

/// On a whole-VA space (short: two levels; LPAE: three, from level 1) with blocks and
/// pages, every lockless answer is the locked walker's, and the walk enters one table per
/// level below the root and no more.
fn lockless_walks_agree_with_the_locked_translate<F: TestFormat>() {
    let epochs: &'static WalkEpochs<1> = leaked_epochs();
    let mem = HostMemory::new();
    let space = AddressSpace::<F, _>::new(mem.clone(), Layout::Whole, F::features()).unwrap();
    let root_level = F::root(Layout::Whole).level;
    let a = LockedAddressSpace::new(space).with_lockless_walkers(epochs);
    {
        let mut g = a.lock();
        // 4 MiB of the format's largest leaves that fit (short: sections; LPAE: 2 MiB).
        let big = F::LEAVES[0].size;
        g.map(
            range(0x4000_0000, 4 * MIB as u64),
            PhysAddr::new(0x8000_0000),
            Attributes::USER_DATA,
            big,
        )
        .unwrap();
        g.map(
            range(0x4040_1000, 3 * 4096),
            PhysAddr::new(0x9000_0000),
            Attributes::USER_DATA,
            MapSize::Page4K,
        )
        .unwrap();
    }
    let guard = epochs.enter(0).unwrap();
    let mut pages = 0;
    for va in [
        0x4000_0000,
        0x4012_3456,
        0x403f_fffc,
        0x4040_1abc,
        0x4040_3ff8,
        0x4040_0000,
        0x4040_4000,
        0x3fff_f000,
        0xffff_f000,
    ] {
        let va = VirtAddr::new(va);
        let mut entered = 0u8;
        let lockless = a
            .translate_lockless_with(va, &guard, &mem, &mut || entered += 1)
            .unwrap();
        let locked = a.lock().translate(va);
        assert_eq!(
            lockless.map(|l| (l.pa, l.size)),
            locked.map(|t| (t.pa, t.mapping.size)),
            "{va:?}"
        );
        if let Some(l) = lockless {
            let level = F::LEAVES.iter().find(|s| s.size == l.size).unwrap().level;
            assert_eq!(entered, level - root_level, "{va:?}: tables entered");
            assert_eq!(l.table.is_some(), level > root_level, "{va:?}");
            if l.size == MapSize::Page4K {
                pages += 1;
            }
        }
    }
    assert_eq!(pages, 2);
    drop(guard);
    let _ = a.destroy(Counting::default(), mem.clone());
}

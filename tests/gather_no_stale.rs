//! qemu: machine=virt,vexpress-a9,raspi2b cpu=cortex-a15,cortex-a7 smp=1 mem=128
//! timeout: 60
//! variant: skip_flush arg=bug=skip_flush expect=fail "STALE"
//! variant: free_early arg=bug=free_early expect=fail "STALE"
//! variant: lpae machine=virt arg=format=lpae
//! variant: lpae_skip_flush machine=virt arg=format=lpae arg=bug=skip_flush expect=fail "STALE"
//! variant: lpae_free_early machine=virt arg=format=lpae arg=bug=free_early expect=fail "STALE"
//! variant: protect_skip_flush arg=case=protect arg=bug=skip_flush expect=fail "STALE: write allowed"
//! variant: lpae_protect_skip_flush machine=virt arg=format=lpae arg=case=protect arg=bug=skip_flush expect=fail "STALE: write allowed"
//!
//! The gather never hands a frame back while a TLB can still reach it.
//!
//! Each case maps many pages (and some large pages and sections) of fresh frames into the
//! process table, reads every one through its VA so QEMU's TLB holds the translations, then
//! unmaps the window and frees its tables through an `MmuGather` and finishes it. The frame
//! allocator's free hook (see `gather_support`) checks, at the moment each frame comes
//! back, that its old VA no longer translates (`ATS1CPR`) and that a read through it
//! faults; it then reuses the frame (poison for data, garbage descriptors for tables).
//! After `finish`, every old VA must still fault: never old data, poison or the secret.
//!
//! Cases: a sparse unmap under the threshold (a range flush: by-VA invalidates only), a
//! dense one over it (fallback), blocks (supersection, sections, large pages: one by-VA
//! invalidate each), one where the allocator refuses the batch frame (the gather flushes
//! early and continues), and a gather dropped without `finish`.
//!
//! QEMU's TLB flushes everything on a by-VA invalidate that falls inside the region it
//! tracks for large mappings, so on QEMU the block case shows that one invalidate per
//! block leaves nothing stale, not that a core with fragmented block entries would drop
//! them all (that is the architecture's promise the docs of `armv7_mm::gather` rely on).
//!
//! `protect_read_only_through_the_gather` is mprotect: pages (and, with short descriptors,
//! replicated large pages) are written, made read-only through a gather, and every write
//! after `finish` must take a permission fault; the `protect_skip_flush` variants run only it,
//! with the invalidates dropped, and must be caught writing through the stale entries.
//!
//! Teeth: `bug=skip_flush` runs the same cases with a backend that drops every invalidate;
//! `bug=free_early` frees each frame as the walker reports it (no gather). Both must be
//! caught ("STALE").
//!
//! `format=lpae` runs the same cases on long-descriptor tables (see `gather_support`):
//! sizes LPAE lacks become several leaves (a 1 MiB section is 256 pages, a 16 MiB
//! supersection eight 2 MiB blocks), the block case uses 2 MiB blocks, and the expected
//! counts follow from the format's table spans; the variants with a bug must fail there
//! too.

#![no_std]
#![no_main]

#[path = "gather_support/mod.rs"]
mod support;

use armv7_mm::gather::{FlushReport, MmuGather, Scope};
use armv7_mm::lpae::Lpae;
use armv7_mm::short::Short;
use armv7_mm::short::{Access, Execute};
use armv7_mm::MapSize;
use rt::fault::{self, FaultClass};
use rt::frames::KernelMemory;
use rt::{ensure, ensure_eq, println, Case, CaseResult};
use support::{with_space, Bug, End, Ignore, Space, TestFormat, Work};

rt::entry!(main);

const MIB: u32 = 1 << 20;
/// The test window in the process half (below 1 GiB, clear of the UART).
const BASE: u32 = support::WINDOW_BASE;

fn main() -> ! {
    support::boot("gather_no_stale", run::<Short>, run::<Lpae>)
}

fn run<F: TestFormat>() -> ! {
    rt::cases::run(&[
        Case {
            name: "sparse_pages_range_flush",
            run: sparse_pages_range_flush::<F>,
        },
        Case {
            name: "dense_pages_large_pages_sections_fallback",
            run: dense_fallback::<F>,
        },
        Case {
            name: "one_invalidate_per_block",
            run: one_invalidate_per_block::<F>,
        },
        Case {
            name: "no_batch_frame_flushes_early",
            run: no_batch_frame::<F>,
        },
        Case {
            name: "dropped_gather_flushes_then_frees",
            run: dropped_gather::<F>,
        },
        Case {
            name: "protect_read_only_through_the_gather",
            run: protect_through_gather::<F>,
        },
    ])
}

/// Unmaps the window and frees its tables through a gather (or, with `bug=free_early`,
/// through a sink that frees at once); returns the report and the backend's counters.
fn zap_window<F: TestFormat>(space: &mut Space<F>, end: End) -> Option<FlushReport> {
    let Some(pass) = support::phase(space, Work::Both, end, &mut Ignore)? else {
        return Some(FlushReport::default());
    };
    let (report, c) = (pass.report, pass.counters);
    match end {
        End::Finish => println!("    {report}"),
        End::Drop => println!(
            "    dropped unfinished; the backend then saw {} invalidates, {} completion(s)",
            c.invalidates(),
            c.completions
        ),
    }
    if end == End::Drop && !pass.skip && (c.completions != 1 || c.invalidates() == 0) {
        println!("    the dropped gather did not flush");
        return None;
    }
    if end == End::Finish && !pass.skip {
        // The backend saw exactly what the gather reports.
        if c.invalidates() != report.invalidates.tlb_ops()
            || c.completions != report.completions as u64
        {
            println!("    backend counters {c:?} disagree with the report");
            return None;
        }
    }
    Some(report)
}

/// Common tail: nothing stale at free time, nothing stale after, everything watched freed.
fn check_clean() -> CaseResult {
    let after = support::check_all_gone();
    let h = support::hook_stats();
    println!(
        "    hook: {} pages checked at free time, {} stale; {} stale after finish; {}/{} leaves freed",
        h.checked, h.stale, after, h.freed_leaves, h.leaves
    );
    ensure_eq!(h.stale, 0, "translations alive when their frames came back");
    ensure_eq!(after, 0, "old VAs that still translate");
    ensure_eq!(h.freed_leaves, h.leaves, "every mapped frame handed back");
    ensure!(h.checked > 0, "the hook checked nothing");
    Ok(())
}

fn sparse_pages_range_flush<F: TestFormat>() -> CaseResult {
    with_space::<F>(|space| {
        // 48 pages: one in each of 48 different 1 MiB regions, spread over 240 MiB (48
        // tables of both formats).
        let mut vas = [0u32; 48];
        for (i, va) in vas.iter_mut().enumerate() {
            let i = i as u32;
            *va = BASE + i * 5 * MIB + (i % 7) * 0x3000;
            support::map_leaf(space, *va, MapSize::Page4K, false)?;
        }
        let (frames, tables) = support::tables_for::<F>(&vas);
        support::touch_all()?;
        let r = zap_window(space, End::Finish).ok_or(())?;
        check_clean()?;
        if support::bug() == Bug::None {
            ensure_eq!(r.leaves_cleared, 48, "leaves");
            ensure_eq!(r.tables_unlinked, tables, "table regions");
            ensure_eq!(r.table_frames_freed, frames, "table frames");
            ensure_eq!(
                r.invalidates.by_va(),
                48,
                "one per page; each table region covered"
            );
            ensure_eq!(r.invalidates.asid + r.invalidates.all, 0, "a range flush");
            ensure_eq!(
                r.invalidates.va_all_asids,
                support::all_asid_table_invalidates(tables),
                "all-ASID invalidates for the layout's tables"
            );
            ensure_eq!(
                (r.flushes, r.completions),
                (1, 1),
                "one flush, one completion"
            );
        }
        Ok(())
    })
}

fn dense_fallback<F: TestFormat>() -> CaseResult {
    with_space::<F>(|space| {
        // 1 MiB of pages, 4 large pages, 2 sections, one executable page. The pages are
        // mapped from the top down, so their frames run backwards: no run forms, and the
        // batch needs a borrowed frame.
        for i in (0..256u32).rev() {
            support::map_leaf(space, BASE + i * 4096, MapSize::Page4K, false)?;
        }
        for i in 0..4u32 {
            support::map_leaf(
                space,
                BASE + 2 * MIB + i * 0x1_0000,
                MapSize::Large64K,
                false,
            )?;
        }
        for i in 0..2u32 {
            support::map_leaf(space, BASE + 4 * MIB + i * MIB, MapSize::Section1M, false)?;
        }
        support::map_leaf(space, BASE + 8 * MIB, MapSize::Page4K, true)?;
        support::touch_all()?;
        let r = zap_window(space, End::Finish).ok_or(())?;
        check_clean()?;
        if support::bug() == Bug::None {
            let leaves = 257 * F::leaves(MapSize::Page4K)
                + 4 * F::leaves(MapSize::Large64K)
                + 2 * F::leaves(MapSize::Section1M);
            ensure_eq!(r.leaves_cleared, leaves, "leaves");
            ensure!(r.fell_back(), "{} leaves are past the threshold", leaves);
            ensure_eq!(r.invalidates.tlb_ops(), 1, "one fallback operation");
            ensure_eq!(r.invalidates.branch_predictor, 1, "executable page");
            ensure!(r.batch_frames_borrowed >= 1, "more than the on-stack batch");
        }
        Ok(())
    })
}

fn one_invalidate_per_block<F: TestFormat>() -> CaseResult {
    with_space::<F>(|space| {
        // Short: a 16 MiB supersection, two 1 MiB sections and two 64 KiB large pages;
        // LPAE: four 2 MiB blocks and a page. Each is one TLB entry, so one by-VA
        // invalidate each (probed at several 4 KiB offsets).
        for &(off, size) in F::BLOCKS {
            support::map_leaf(space, BASE + off, size, false)?;
        }
        support::touch_all()?;
        let r = zap_window(space, End::Finish).ok_or(())?;
        check_clean()?;
        if support::bug() == Bug::None {
            let blocks = F::BLOCKS.len() as u32;
            ensure_eq!(r.leaves_cleared, blocks, "leaves");
            ensure_eq!(
                r.invalidates.by_va(),
                u64::from(blocks),
                "one per block (the freed table's span is covered)"
            );
            ensure_eq!(r.invalidates.asid + r.invalidates.all, 0, "a range flush");
        }
        Ok(())
    })
}

fn no_batch_frame<F: TestFormat>() -> CaseResult {
    with_space::<F>(|space| {
        // Mapped from the top down, so the frames behind ascending VAs descend: no two
        // are physically consecutive, each is its own batch entry (no run), and 40 of them
        // overflow the on-stack batch.
        for i in (0..40u32).rev() {
            support::map_leaf(space, BASE + 16 * MIB + i * 4096, MapSize::Page4K, false)?;
        }
        support::touch_all()?;
        // The next allocation (the gather's first batch frame) fails.
        rt::frames::fail_nth(Some(1));
        let r = zap_window(space, End::Finish);
        rt::frames::fail_nth(None);
        let r = r.ok_or(())?;
        check_clean()?;
        if support::bug() == Bug::None {
            ensure!(r.batch_alloc_failures >= 1, "the batch frame was refused");
            ensure!(r.early_flushes >= 1, "so the gather flushed early");
            ensure_eq!(r.completions, r.flushes, "one completion per flush");
            ensure_eq!(r.leaves_released, 40, "pages freed");
        }
        Ok(())
    })
}

fn dropped_gather<F: TestFormat>() -> CaseResult {
    with_space::<F>(|space| {
        for i in 0..24u32 {
            support::map_leaf(space, BASE + 32 * MIB + i * 3 * MIB, MapSize::Page4K, false)?;
        }
        support::touch_all()?;
        zap_window(space, End::Drop).ok_or(())?;
        check_clean()
    })
}

/// mprotect: writable leaves made read-only through a gather; after `finish`, writes fault.
fn protect_through_gather<F: TestFormat>() -> CaseResult {
    with_space::<F>(|space| {
        let mut leaves = [(0u32, MapSize::Page4K); 10];
        for (i, l) in leaves.iter_mut().enumerate().take(8) {
            *l = (BASE + 40 * MIB + i as u32 * 5 * 4096, MapSize::Page4K);
        }
        let n = if support::lpae() {
            8
        } else {
            // Two replicated large pages: rewritten with break-before-make.
            leaves[8] = (BASE + 41 * MIB, MapSize::Large64K);
            leaves[9] = (BASE + 41 * MIB + (64 << 10), MapSize::Large64K);
            10
        };
        for &(va, size) in &leaves[..n] {
            support::map_leaf(space, va, size, false)?;
        }
        support::touch_all()?;
        for &(va, _) in &leaves[..n] {
            let old = fault::read32(va as usize);
            ensure!(old.is_ok(), "read {va:#x}");
            // SAFETY: a writable mapping of our own frame; the value written is the one read.
            let w = unsafe { fault::write32(va as usize, old.unwrap_or(0)) };
            ensure!(w.is_ok(), "write {va:#x} while writable: {w:?}");
        }
        let mut tlb = support::TestTlb::new();
        let mut gather = MmuGather::new(
            Scope::Asid(support::ASID),
            &mut tlb,
            KernelMemory,
            &support::IN_FLIGHT,
        );
        let window = support::range(BASE + 40 * MIB, 2 * MIB as u64);
        let changed = space.protect(window, Access::UserRo, Execute::Never, &mut gather);
        ensure!(
            matches!(changed, Ok(Some(c)) if c.leaves == n && c.replicated == n - 8),
            "protect: {changed:?}"
        );
        let report = gather.finish();
        println!("    {report}");
        ensure_eq!(report.leaves_changed as usize, n, "leaves reported changed");
        ensure_eq!(report.leaves_released, 0, "protect freed something");
        for &(va, _) in &leaves[..n] {
            // SAFETY: if the new permissions are not in force this writes our own frame
            // with the value it holds.
            match unsafe { fault::write32(va as usize, fault::read32(va as usize).unwrap_or(0)) } {
                Ok(()) => {
                    println!("    STALE: write allowed at {va:#x} after protect(UserRo)");
                    return Err(());
                }
                Err(f) => ensure_eq!(f.class(), FaultClass::Permission, "DFSR {:#x}", f.status),
            }
            ensure!(
                fault::read32(va as usize).is_ok(),
                "read {va:#x} after protect"
            );
        }
        zap_window(space, End::Finish).ok_or(())?;
        check_clean()
    })
}

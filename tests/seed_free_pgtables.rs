//! qemu: machine=virt,vexpress-a9,raspi2b cpu=cortex-a15,cortex-a7 smp=1 mem=128
//! timeout: 60
//! variant: skip_flush arg=bug=skip_flush expect=fail "STALE"
//! variant: free_early arg=bug=free_early expect=fail "STALE"
//! variant: lpae machine=virt arg=format=lpae
//! variant: lpae_skip_flush machine=virt arg=format=lpae arg=bug=skip_flush expect=fail "STALE"
//! variant: lpae_free_early machine=virt arg=format=lpae arg=bug=free_early expect=fail "STALE"
//!
//! The founding document's case: range tracking during `free_pgtables`, not only during the
//! zap, and the freed page tables kept until the flush.
//!
//! A sparse mapping over a large region (36 pages over 256 MiB: 32 4 MiB groups, four of
//! them with two regions used, so 36 L2 tables in 32 table frames) is read through, then
//! unmapped and its tables freed through a gather. When a table frame comes back, the free
//! hook fills it with valid-looking small-page descriptors pointing at a secret frame: a
//! walk that still went through the old table (a stale walk-cache entry) would now read
//! the secret. Every access through an old VA must fault. The counters must show a range
//! flush (by-VA invalidates only; no ASID or full flush) since the work is under the
//! threshold, and the report is printed next to what Linux's ARM32 policy would issue.
//!
//! Cases: unmap and free tables in one gather (Linux `unmap_region`); free tables in a
//! later gather after an earlier unmap was flushed (then each freed table's region needs
//! its own invalidate); and past the threshold (fallback).
//!
//! Teeth: `bug=skip_flush` (invalidates dropped) and `bug=free_early` (no gather) must be
//! caught ("STALE"). QEMU has no walk cache (its TLB holds final translations only), so on
//! QEMU the stale-table danger shows up as a stale leaf; the walk-cache half is enforced by
//! the host TLB model (`gather::model_tests::teeth_untracked_table_frees_are_caught`).
//!
//! `format=lpae` runs the same cases on long-descriptor tables (see `gather_support`): a
//! level-3 table spans 2 MiB and has a frame of its own, so the tables and frames the cases
//! expect follow from the pages' VAs and the format's spans (`support::tables_for`), and
//! the bug variants must fail there too.

#![no_std]
#![no_main]

#[path = "gather_support/mod.rs"]
mod support;

use armv7_mm::gather::{FlushReport, LinuxArm32Estimate};
use armv7_mm::lpae::Lpae;
use armv7_mm::short::Short;
use armv7_mm::MapSize;
use rt::{ensure, ensure_eq, println, Case, CaseResult};
use support::{with_space, Bug, End, Space, TestFormat, Work};

rt::entry!(main);

const MIB: u32 = 1 << 20;
const BASE: u32 = support::WINDOW_BASE;

fn main() -> ! {
    support::boot("seed_free_pgtables", run_cases::<Short>, run_cases::<Lpae>)
}

fn run_cases<F: TestFormat>() -> ! {
    rt::cases::run(&[
        Case {
            name: "unmap_and_free_tables_in_one_gather",
            run: one_gather::<F>,
        },
        Case {
            name: "free_tables_after_an_earlier_unmap",
            run: two_gathers::<F>,
        },
        Case {
            name: "past_the_threshold_falls_back",
            run: past_threshold::<F>,
        },
    ])
}

/// Runs `work` over the window through a gather (or, with `bug=free_early`, a sink that
/// frees at once); returns the report and what Linux's ARM32 policy would have issued.
fn phase<F: TestFormat>(space: &mut Space<F>, work: Work) -> Option<(FlushReport, u64)> {
    let mut linux = LinuxArm32Estimate::new(false);
    let Some(pass) = support::phase(space, work, End::Finish, &mut linux)? else {
        return Some((FlushReport::default(), 0));
    };
    let (report, c) = (pass.report, pass.counters);
    let linux_ops = linux.finish();
    println!("    {report}");
    println!(
        "    TLB invalidates: ours {} (backend counted {}), Linux ARM32 policy {}",
        report.invalidates.tlb_ops(),
        c.invalidates(),
        linux_ops
    );
    if !pass.skip && (c.invalidates() != report.invalidates.tlb_ops() || c.completions != 1) {
        println!("    backend counters {c:?} disagree with the report");
        return None;
    }
    Some((report, linux_ops))
}

/// 36 pages: one in each of 32 4 MiB groups (at varying regions), plus a second region
/// in every 8th group (short: two L2 tables sharing a frame; LPAE: the same 2 MiB table).
/// Returns the pages and the (table frames, tables) they live in.
fn map_sparse<F: TestFormat>(space: &mut Space<F>, n_groups: u32) -> Result<(u32, u32, u32), ()> {
    let mut vas = [0u32; 64];
    let mut n = 0;
    for g in 0..n_groups {
        let group = BASE + g * 8 * MIB;
        vas[n] = group + (g % 4) * MIB + 0x5000;
        n += 1;
        if g % 8 == 0 {
            vas[n] = group + ((g % 4) + 1) * MIB + 0x9000;
            n += 1;
        }
    }
    for &va in &vas[..n] {
        support::map_leaf(space, va, MapSize::Page4K, false)?;
    }
    let (frames, tables) = support::tables_for::<F>(&vas[..n]);
    Ok((n as u32, frames, tables))
}

fn check_clean(expect_tables: u32) -> CaseResult {
    let after = support::check_all_gone();
    let h = support::hook_stats();
    println!(
        "    hook: {} pages checked at free time, {} stale; {} table frames refilled with garbage; {} stale after",
        h.checked, h.stale, h.garbage_tables, after
    );
    ensure_eq!(h.stale, 0, "translations alive when their frames came back");
    ensure_eq!(
        after,
        0,
        "old VAs that still translate (or walk the garbage tables)"
    );
    ensure_eq!(h.freed_leaves, h.leaves, "every mapped frame handed back");
    ensure_eq!(
        h.garbage_tables,
        expect_tables,
        "table frames freed and reused"
    );
    Ok(())
}

fn one_gather<F: TestFormat>() -> CaseResult {
    with_space::<F>(|space| {
        let (leaves, frames, tables) = map_sparse(space, 32)?;
        support::touch_all()?;
        let (r, linux) = phase(space, Work::Both).ok_or(())?;
        check_clean(frames)?;
        if support::bug() == Bug::None {
            ensure_eq!(leaves, 36, "pages mapped");
            ensure_eq!(r.tables_unlinked, tables, "table regions");
            ensure_eq!(
                r.table_frames_freed,
                frames,
                "table frames (short: packed 4 per frame)"
            );
            ensure_eq!(
                r.invalidates.by_va(),
                36,
                "one per page; every table region already covered"
            );
            ensure_eq!(
                r.invalidates.asid + r.invalidates.all,
                0,
                "a range flush, no ASID/full flush"
            );
            ensure_eq!(
                r.invalidates.va_all_asids,
                support::all_asid_table_invalidates(tables),
                "all-ASID invalidates for the layout's tables"
            );
            ensure!(r.fallback.is_none(), "no fallback: {:?}", r.fallback);
            ensure!(
                linux >= 1000 * r.invalidates.tlb_ops(),
                "Linux policy {linux}"
            );
        }
        Ok(())
    })
}

fn two_gathers<F: TestFormat>() -> CaseResult {
    with_space::<F>(|space| {
        let (_, frames, tables) = map_sparse(space, 32)?;
        support::touch_all()?;
        let (first, _) = phase(space, Work::Unmap).ok_or(())?;
        // Accesses (speculative ones on hardware) walk into the now empty tables again; on
        // a CPU with a walk cache they reload its entries for those tables.
        let faults = support::check_all_gone();
        ensure_eq!(faults, 0, "unmapped pages still translate");
        let (r, _) = phase(space, Work::FreeTables).ok_or(())?;
        check_clean(frames)?;
        if support::bug() == Bug::None {
            ensure_eq!(first.invalidates.va, 36, "the unmap's range flush");
            ensure_eq!(r.leaves_cleared, 0, "nothing left to unmap");
            ensure_eq!(
                r.invalidates.by_va(),
                u64::from(tables),
                "one by-VA invalidate per freed table region"
            );
            ensure_eq!(
                r.invalidates.asid + r.invalidates.all,
                0,
                "a range flush, no ASID/full flush"
            );
            ensure_eq!(r.completions, 1, "one completion");
        }
        Ok(())
    })
}

fn past_threshold<F: TestFormat>() -> CaseResult {
    with_space::<F>(|space| {
        // 64 + 8 = 72 leaves and regions: past the default threshold of 64.
        let mut n = 0;
        for g in 0..64u32 {
            support::map_leaf(space, BASE + g * 4 * MIB + 0x1000, MapSize::Page4K, false)?;
            n += 1;
        }
        support::touch_all()?;
        let (r, linux) = phase(space, Work::Both).ok_or(())?;
        check_clean(64)?;
        if support::bug() == Bug::None {
            ensure_eq!(n, 64, "pages");
            ensure_eq!(
                r.invalidates.by_va(),
                64,
                "64 is still within the threshold"
            );
            ensure_eq!(
                r.invalidates.asid + r.invalidates.all,
                0,
                "range flush at the threshold"
            );
            ensure!(linux > r.invalidates.tlb_ops(), "Linux policy {linux}");
        }
        // One more page: 65 invalidates would be needed, so the gather falls back.
        support::reset_watch();
        for g in 0..65u32 {
            support::map_leaf(space, BASE + g * 3 * MIB + 0x2000, MapSize::Page4K, false)?;
        }
        support::touch_all()?;
        let (r, _) = phase(space, Work::Both).ok_or(())?;
        let tables = support::hook_stats().garbage_tables;
        check_clean(tables)?;
        if support::bug() == Bug::None {
            ensure!(r.fell_back(), "65 pages are past the threshold");
            ensure_eq!(r.invalidates.tlb_ops(), 1, "one fallback operation");
            // Tables were freed: with a split, one TLBIASID drops the ASID's walk-cache
            // entries too (the crate's switch never walks a space's tables under another
            // ASID); without one (raspi2b) the tables may hold global entries: TLBIALL.
            ensure_eq!(
                (r.invalidates.asid, r.invalidates.all),
                support::FALLBACK_AFTER_TABLES,
                "tables were freed: (TLBIASID, TLBIALL) for the layout"
            );
            ensure!(tables > 0, "tables freed");
        }
        Ok(())
    })
}

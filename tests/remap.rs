//! qemu: cpu=cortex-a15,cortex-a7 smp=1 mem=256
//! timeout: 60
//! variant: noflush arg=noflush expect=fail "stale translation"
//! variant: raw_switch arg=raw-switch expect=fail "wrong context"
//!
//! Live unmap / remap / protect on the crate's own tables, checked with real accesses.
//!
//! The kernel runs on a crate-built `AddressSpace` (as in `walker_oracle`, but cleaning
//! every descriptor write to the point of unification, the non-coherent-walk path). Each case
//! changes live mappings and checks, through `rt::fault` probes, that accesses fault or
//! succeed (and read the right frame) exactly as the tables now say. Until the gather is
//! used here, every change is followed by a full local TLB flush (`TLBIALL` + `BPIALL`
//! between barriers); the `noflush` variant skips the `TLBIALL` and must be caught reading
//! a stale translation (QEMU keeps using it, see the shared notes).
//!
//! The last case runs split translation (`TTBCR.N = 2`): the kernel in a `TTBR1` table,
//! two processes in `TTBR0` tables with not-global user pages at the same VA, switched
//! with `arch::mmu::activate`. The `raw_switch` variant switches by writing `TTBR0` alone
//! (no ASID change, no flush) and must be caught seeing the other process's page.

#![no_std]
#![no_main]

use armv7_mm::arch::barrier::{dsb_ish, dsb_ishst, isb};
use armv7_mm::arch::cp15::TTBR0;
use armv7_mm::arch::{mmu, tlbi};
use armv7_mm::error::{MapError, UnmapError};
use armv7_mm::short::{Access, AddressSpace, Attributes, Execute, Features, Layout};
use armv7_mm::{Asid, ChangedLeaf, ClearedLeaf, MapSize, PhysAddr, UnmapSink, VirtAddr, VirtRange};
use rt::fault::{self, AbortKind, FaultClass};
use rt::frames::{KernelMemory, RAM_BASE};
use rt::{ensure, ensure_eq, println, Case, CaseResult};
use spin::Mutex;
use tock_registers::interfaces::Writeable;

rt::entry!(main);

type Space = AddressSpace<KernelMemory>;

static SPACE: Mutex<Option<Space>> = Mutex::new(None);

const UART: u32 = 0x0900_0000;
const MAGIC: u32 = 0x0bad_f00d;
/// Scratch VAs, far from RAM (0x4000_0000..) and the UART.
const VA_A: u32 = 0x2000_0000;
const VA_B: u32 = 0x2100_0000;
const VA_C: u32 = 0x6000_0000;

fn main() -> ! {
    rt::mmu::enable_identity(rt::ram_size());
    // Clean every descriptor write to the point of unification as if table walks were not
    // coherent (QEMU's CPUs say they are), so the `DCCMVAU` path runs on live tables too.
    let features = Features {
        coherent_walk: false,
        ..mmu::detect_features()
    };
    println!("remap: {:?}", features);
    let Ok(mut space) = AddressSpace::new(KernelMemory, Layout::Whole, features) else {
        println!("remap: no address space");
        rt::fail_now()
    };
    let ok = space
        .map(
            range(RAM_BASE as u32, rt::ram_size()),
            PhysAddr::new(RAM_BASE),
            Attributes::KERNEL_IMAGE,
            MapSize::Super16M,
        )
        .and_then(|()| {
            space.map(
                range(UART, 4096),
                PhysAddr::new(UART as u64),
                Attributes::DEVICE,
                MapSize::Page4K,
            )
        });
    if let Err(e) = ok {
        println!("remap: kernel map failed: {:?}", e);
        rt::fail_now()
    }
    // SAFETY: the new tables map RAM and the UART as the boot map does.
    unsafe {
        mmu::enable_tex_remap();
        if mmu::activate(space.root(), Asid(1)).is_err() {
            rt::fail_now()
        }
    }
    println!("remap: running on the crate's tables at {}", space.root());
    *SPACE.lock() = Some(space);
    rt::cases::run(&[
        Case {
            name: "unmap_then_accesses_fault",
            run: unmap_then_accesses_fault,
        },
        Case {
            name: "remap_every_size_to_new_frames",
            run: remap_every_size,
        },
        Case {
            name: "protect_live_permissions",
            run: protect_live,
        },
        Case {
            name: "execute_permissions_live",
            run: execute_live,
        },
        Case {
            name: "refusals_leave_live_mappings_working",
            run: refusals,
        },
        Case {
            name: "failed_map_at_every_allocation_live",
            run: failed_map_live,
        },
        Case {
            name: "free_tables_then_section",
            run: free_tables_then_section,
        },
        Case {
            name: "ttbr_split_and_asid_switch",
            run: split_and_switch,
        },
    ])
}

// ----- helpers ---------------------------------------------------------------------------

fn range(start: u32, len: u64) -> VirtRange {
    match VirtRange::from_start_len(VirtAddr::new(start), len) {
        Ok(r) => r,
        Err(e) => panic!("bad range {:#x}+{:#x}: {:?}", start, len, e),
    }
}

/// Full local TLB + branch predictor flush (the `noflush` variant leaves the TLB alone).
fn flush_all() {
    dsb_ishst();
    if !rt::flag("noflush") {
        tlbi::tlbiall(0);
    }
    tlbi::bpiall(0);
    dsb_ish();
    isb();
}

/// Frames filled so that the word at `pa + off` (for `off` in 0, 0x800, 0xffc of every
/// 4 KiB frame) is `(pa + off) ^ MAGIC ^ tag`.
fn alloc_filled(frames: usize, align: usize, tag: u32) -> Result<PhysAddr, ()> {
    let Some(pa) = rt::frames::alloc(frames, align) else {
        println!("    out of frames ({} aligned {:#x})", frames, align);
        return Err(());
    };
    for f in 0..frames {
        let base = pa.as_u64() as u32 + (f as u32) * 4096;
        for off in [0u32, 0x800, 0xffc] {
            // SAFETY: identity-mapped RAM we just allocated.
            unsafe {
                core::ptr::write_volatile((base + off) as *mut u32, (base + off) ^ MAGIC ^ tag)
            };
        }
    }
    Ok(pa)
}

/// Reads `va + off` for a few pages of `[va, va + len)` and checks they come from `pa`.
fn check_reads(va: u32, len: u64, pa: PhysAddr, tag: u32) -> CaseResult {
    let pages = (len / 4096) as u32;
    for page in [0, pages / 2, pages - 1] {
        for off in [0u32, 0x800, 0xffc] {
            let v = va + page * 4096 + off;
            let p = pa.as_u64() as u32 + page * 4096 + off;
            let got = fault::read32(v as usize);
            ensure_eq!(
                got,
                Ok(p ^ MAGIC ^ tag),
                "read {:#010x} (frame {:#x})",
                v,
                p
            );
        }
    }
    Ok(())
}

/// Every sampled page of `[va, va + len)` must take a translation fault now.
fn check_unmapped(va: u32, len: u64) -> CaseResult {
    let pages = (len / 4096) as u32;
    for page in [0, pages / 2, pages - 1] {
        let v = (va + page * 4096 + 4) as usize;
        match fault::read32(v) {
            Ok(x) => {
                println!(
                    "    stale translation: read {:#x} at {:#x} after unmap",
                    x, v
                );
                return Err(());
            }
            Err(f) => {
                ensure_eq!(f.class(), FaultClass::Translation, "DFSR {:#x}", f.status);
                ensure_eq!(f.address as usize, v, "DFAR");
            }
        }
    }
    Ok(())
}

/// Records cleared leaves and freed table frames; frees the frames after the flush.
struct Rec {
    leaves: [Option<ClearedLeaf>; 64],
    nleaves: usize,
    tables: [Option<PhysAddr>; 64],
    ntables: usize,
    unlinked: usize,
}

impl Rec {
    const fn new() -> Self {
        Rec {
            leaves: [None; 64],
            nleaves: 0,
            tables: [None; 64],
            ntables: 0,
            unlinked: 0,
        }
    }
    fn leaves(&self) -> impl Iterator<Item = &ClearedLeaf> {
        self.leaves[..self.nleaves].iter().flatten()
    }
    /// Flush, then hand the table frames back.
    fn flush_and_free(&mut self) {
        flush_all();
        for t in self.tables[..self.ntables].iter_mut() {
            if let Some(pa) = t.take() {
                rt::frames::free(pa, 1);
            }
        }
        self.ntables = 0;
        self.nleaves = 0;
        self.unlinked = 0;
    }
}

impl UnmapSink for Rec {
    fn leaf_changed(&mut self, _leaf: ChangedLeaf) {
        // Every protect here is followed by `flush_all`.
    }
    fn flush_now(&mut self) {
        flush_all();
    }
    fn leaf_cleared(&mut self, leaf: ClearedLeaf) {
        if self.nleaves < self.leaves.len() {
            self.leaves[self.nleaves] = Some(leaf);
        }
        self.nleaves += 1;
    }
    fn table_unlinked(&mut self, _va: VirtAddr, _span: u64, _global: bool) {
        self.unlinked += 1;
    }
    fn table_memory_freed(&mut self, pa: PhysAddr, frames: usize) {
        if frames == 1 && self.ntables < self.tables.len() {
            self.tables[self.ntables] = Some(pa);
            self.ntables += 1;
        } else {
            // L1 tables of destroyed spaces (several frames): free after the flush too,
            // but those are only destroyed in the split case, which frees them itself.
            println!("    unexpected table memory {} x{}", pa, frames);
        }
    }
}

fn with_space(f: impl FnOnce(&mut Space) -> CaseResult) -> CaseResult {
    let mut guard = SPACE.lock();
    let Some(space) = guard.as_mut() else {
        return Err(());
    };
    f(space)
}

/// Frees the L2 frames of `[va, va + len)` (whole 4 MiB groups) after a flush.
fn free_tables(space: &mut Space, va: u32, len: u64) -> CaseResult {
    let lo = va & !0x3f_ffff;
    let hi = (va as u64 + len + 0x3f_ffff) & !0x3f_ffff;
    let r = range(lo, hi - lo as u64);
    let mut rec = Rec::new();
    if space.free_tables(r, r, &mut rec).is_err() {
        println!("    free_tables refused");
        return Err(());
    }
    rec.flush_and_free();
    Ok(())
}

// ----- cases -----------------------------------------------------------------------------

fn unmap_then_accesses_fault() -> CaseResult {
    with_space(|space| {
        let pa = alloc_filled(16, 64 << 10, 0)?;
        let frames_before = space.table_frames();
        let r = range(VA_A, 64 << 10);
        ensure!(
            space
                .map(r, pa, Attributes::KERNEL_DATA, MapSize::Page4K)
                .is_ok(),
            "map"
        );
        check_reads(VA_A, 64 << 10, pa, 0)?;
        // A write through the mapping lands in the frame.
        // SAFETY: VA_A + 8 maps our frame.
        ensure!(
            unsafe { fault::write32(VA_A as usize + 8, 0x7777) }.is_ok(),
            "write"
        );
        // SAFETY: identity-mapped RAM we own.
        let back = unsafe { core::ptr::read_volatile((pa.as_u64() + 8) as *const u32) };
        ensure_eq!(back, 0x7777, "write reached the frame");

        let mut rec = Rec::new();
        ensure_eq!(space.unmap(r, &mut rec), Ok(16), "leaves cleared");
        for (k, l) in rec.leaves().enumerate() {
            ensure_eq!(l.va.as_u32(), VA_A + k as u32 * 4096, "leaf va");
            ensure_eq!(l.pa.as_u64(), pa.as_u64() + k as u64 * 4096, "leaf pa");
            ensure!(
                l.size == MapSize::Page4K && l.global && !l.executable,
                "leaf {:?}",
                l
            );
        }
        rec.flush_and_free();
        check_unmapped(VA_A, 64 << 10)?;
        free_tables(space, VA_A, 64 << 10)?;
        ensure_eq!(space.table_frames(), frames_before, "tables freed");
        rt::frames::free(pa, 16);
        Ok(())
    })
}

fn remap_every_size() -> CaseResult {
    with_space(|space| {
        for (size, bytes, va) in [
            (MapSize::Page4K, 8u64 << 10, VA_A),
            (MapSize::Large64K, 128 << 10, VA_A),
            (MapSize::Section1M, 2 << 20, VA_B),
            (MapSize::Super16M, 16 << 20, VA_C),
        ] {
            let frames = (bytes / 4096) as usize;
            let align = size.bytes() as usize;
            let a = alloc_filled(frames, align, 0x1111)?;
            let b = alloc_filled(frames, align, 0x2222)?;
            let r = range(va, bytes);
            ensure!(
                space.map(r, a, Attributes::KERNEL_DATA, size).is_ok(),
                "map A {:?}",
                size
            );
            let t = space.translate(VirtAddr::new(va));
            ensure_eq!(t.map(|t| t.mapping.size), Some(size), "size used");
            check_reads(va, bytes, a, 0x1111)?;
            let mut rec = Rec::new();
            ensure!(space.unmap(r, &mut rec).is_ok(), "unmap A");
            let want = (bytes / size.bytes()) as usize;
            ensure_eq!(rec.nleaves, want, "one report per {:?} mapping", size);
            rec.flush_and_free();
            check_unmapped(va, bytes)?;
            ensure!(
                space.map(r, b, Attributes::KERNEL_DATA, size).is_ok(),
                "map B"
            );
            check_reads(va, bytes, b, 0x2222)?;
            ensure!(space.unmap(r, &mut rec).is_ok(), "unmap B");
            rec.flush_and_free();
            check_unmapped(va, bytes)?;
            free_tables(space, va, bytes)?;
            rt::frames::free(a, frames);
            rt::frames::free(b, frames);
        }
        Ok(())
    })
}

fn protect_live() -> CaseResult {
    with_space(|space| {
        let pa = alloc_filled(4, 4096, 0)?;
        let r = range(VA_A, 4 * 4096);
        ensure!(
            space
                .map(r, pa, Attributes::KERNEL_DATA, MapSize::Page4K)
                .is_ok(),
            "map"
        );
        let va = VA_A as usize + 0x1010;
        // SAFETY: maps our frame.
        ensure!(unsafe { fault::write32(va, 1) }.is_ok(), "write while RW");

        let c = space.protect(r, Access::KernelRo, Execute::Never, &mut Rec::new());
        ensure!(
            matches!(c, Ok(Some(c)) if c.leaves == 4 && c.span == r),
            "changed {:?}",
            c
        );
        flush_all();
        // SAFETY: if it does not fault it writes our frame.
        match unsafe { fault::write32(va, 2) } {
            Ok(()) => {
                println!("    stale translation: write allowed after protect(KernelRo)");
                return Err(());
            }
            Err(f) => ensure_eq!(f.class(), FaultClass::Permission, "DFSR {:#x}", f.status),
        }
        ensure_eq!(fault::read32(va), Ok(1), "read while RO");
        ensure!(
            fault::read32_user(va).is_err(),
            "user read of a kernel page"
        );

        ensure!(
            space
                .protect(r, Access::UserRw, Execute::Never, &mut Rec::new())
                .is_ok(),
            "protect"
        );
        flush_all();
        ensure_eq!(
            fault::read32_user(va),
            Ok(1),
            "user read after protect(UserRw)"
        );

        ensure!(
            space
                .protect(r, Access::KernelRw, Execute::Never, &mut Rec::new())
                .is_ok(),
            "protect"
        );
        flush_all();
        match fault::read32_user(va) {
            Ok(v) => {
                println!(
                    "    stale translation: user read {:#x} after protect(KernelRw)",
                    v
                );
                return Err(());
            }
            Err(f) => ensure_eq!(f.class(), FaultClass::Permission, "DFSR {:#x}", f.status),
        }
        // Protect changes permissions only: the same frames are still there.
        check_reads(VA_A, 4 * 4096, pa, 0)?;
        let mut rec = Rec::new();
        ensure!(space.unmap(r, &mut rec).is_ok(), "unmap");
        rec.flush_and_free();
        check_unmapped(VA_A, 4 * 4096)?;
        free_tables(space, VA_A, 4 * 4096)?;
        rt::frames::free(pa, 4);
        Ok(())
    })
}

/// `bx lr`, A32.
const BX_LR: u32 = 0xe12f_ff1e;

fn execute_live() -> CaseResult {
    with_space(|space| {
        let Some(pa) = rt::frames::alloc(256, 1 << 20) else {
            return Err(());
        };
        // SAFETY: identity-mapped RAM we own; then make it visible to instruction fetch.
        unsafe { core::ptr::write_volatile(pa.as_u64() as *mut u32, BX_LR) };
        mmu::clean_dcache_to_pou(pa.as_u64() as usize, 4);
        dsb_ish();
        tlbi::iciallu(0);
        dsb_ish();
        isb();

        // A page: executable, then XN.
        let r = range(VA_A, 4096);
        ensure!(
            space
                .map(r, pa, Attributes::KERNEL_IMAGE, MapSize::Page4K)
                .is_ok(),
            "map"
        );
        // SAFETY: VA_A maps a `bx lr`.
        ensure!(
            unsafe { fault::call(VA_A as usize) }.is_ok(),
            "call executable page"
        );
        ensure!(
            space
                .protect(r, Access::KernelRw, Execute::Never, &mut Rec::new())
                .is_ok(),
            "protect XN"
        );
        flush_all();
        // SAFETY: as above; expected to fault.
        match unsafe { fault::call(VA_A as usize) } {
            Ok(()) => {
                println!("    stale translation: executed an XN page");
                return Err(());
            }
            Err(f) => {
                ensure_eq!(f.kind, AbortKind::Prefetch, "abort kind");
                ensure_eq!(f.class(), FaultClass::Permission, "IFSR {:#x}", f.status);
            }
        }
        let mut rec = Rec::new();
        ensure!(space.unmap(r, &mut rec).is_ok(), "unmap");
        rec.flush_and_free();
        free_tables(space, VA_A, 4096)?;

        // A section: user-only execute (PXN) faults for the kernel; anywhere runs.
        let r = range(VA_B, 1 << 20);
        let user_code = Attributes {
            execute: Execute::UserOnly,
            ..Attributes::KERNEL_IMAGE
        };
        ensure!(
            space.map(r, pa, user_code, MapSize::Section1M).is_ok(),
            "map PXN section"
        );
        // SAFETY: VA_B maps a `bx lr`; PXN makes the fetch fault.
        match unsafe { fault::call(VA_B as usize) } {
            Ok(()) => {
                println!("    PXN section executed at PL1");
                return Err(());
            }
            Err(f) => ensure_eq!(f.class(), FaultClass::Permission, "IFSR {:#x}", f.status),
        }
        ensure!(
            space
                .protect(r, Access::KernelRw, Execute::Anywhere, &mut Rec::new())
                .is_ok(),
            "protect"
        );
        flush_all();
        // SAFETY: as above.
        ensure!(
            unsafe { fault::call(VA_B as usize) }.is_ok(),
            "call after clearing PXN"
        );
        ensure!(space.unmap(r, &mut rec).is_ok(), "unmap");
        ensure!(rec.leaves().all(|l| l.executable), "executable reported");
        rec.flush_and_free();
        rt::frames::free(pa, 256);
        Ok(())
    })
}

fn refusals() -> CaseResult {
    with_space(|space| {
        let pa = alloc_filled(256, 1 << 20, 0)?;
        let r = range(VA_B, 1 << 20);
        ensure!(
            space
                .map(r, pa, Attributes::KERNEL_DATA, MapSize::Section1M)
                .is_ok(),
            "map"
        );
        let other = PhysAddr::new(pa.as_u64() + 4096);
        ensure_eq!(
            space.map(
                range(VA_B + 0x8000, 4096),
                other,
                Attributes::KERNEL_DATA,
                MapSize::Page4K
            ),
            Err(MapError::AlreadyMapped(VirtAddr::new(VA_B + 0x8000))),
            "map over a live section"
        );
        let mut rec = Rec::new();
        ensure_eq!(
            space.unmap(range(VA_B, 512 << 10), &mut rec),
            Err(UnmapError::PartialBlock {
                va: VirtAddr::new(VA_B),
                size: MapSize::Section1M
            }),
            "half a section"
        );
        ensure_eq!(rec.nleaves, 0, "nothing reported");
        check_reads(VA_B, 1 << 20, pa, 0)?;
        ensure!(space.unmap(r, &mut rec).is_ok(), "whole section");
        rec.flush_and_free();
        check_unmapped(VA_B, 1 << 20)?;
        rt::frames::free(pa, 256);
        Ok(())
    })
}

/// A checksum of every mapping (VA, PA, size, attributes) of the space.
fn fingerprint(space: &Space) -> (usize, u64) {
    let mut n = 0;
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for m in space.mappings(range(0, 1 << 32)) {
        n += 1;
        for x in [
            m.va.as_u64(),
            m.pa.as_u64(),
            m.size.bytes(),
            m.attrs.access as u64,
            m.attrs.memory as u64,
        ] {
            h = (h ^ x).wrapping_mul(0x100_0000_01b3);
        }
    }
    (n, h)
}

fn failed_map_live() -> CaseResult {
    with_space(|space| {
        // A page that stays mapped in the middle of the action, in the first group the big
        // map crosses (whose L2 frame therefore exists already).
        let keep = alloc_filled(1, 4096, 0x3333)?;
        let keep_va = VA_A + (8 << 20);
        ensure!(
            space
                .map(
                    range(keep_va, 4096),
                    keep,
                    Attributes::KERNEL_DATA,
                    MapSize::Page4K
                )
                .is_ok(),
            "map keep"
        );
        let before = fingerprint(space);
        let frames_before = space.table_frames();
        let out_before = rt::frames::stats().outstanding;
        // 24 MiB of RAM, PA 4 KiB off any larger alignment: pages, one L2 frame per 4 MiB
        // group, over 7 groups of which the first has its frame: 6 allocations.
        let len = 24u64 << 20;
        let r = range(VA_A + (9 << 20), len);
        let pa = PhysAddr::new(RAM_BASE + 0x1000);
        let need = 6u64;
        for n in 1..=need {
            rt::frames::fail_nth(Some(n));
            let got = space.map(r, pa, Attributes::KERNEL_DATA, MapSize::Super16M);
            rt::frames::fail_nth(None);
            ensure_eq!(got, Err(MapError::OutOfMemory), "allocation {} failing", n);
            ensure_eq!(
                rt::frames::stats().outstanding,
                out_before,
                "frames after failure {}",
                n
            );
            ensure_eq!(
                space.table_frames(),
                frames_before,
                "tables after failure {}",
                n
            );
            ensure_eq!(fingerprint(space), before, "mappings after failure {}", n);
            check_unmapped(r.start().as_u32(), len)?;
            check_reads(keep_va, 4096, keep, 0x3333)?;
        }
        rt::frames::fail_nth(Some(need + 1));
        let got = space.map(r, pa, Attributes::KERNEL_DATA, MapSize::Super16M);
        rt::frames::fail_nth(None);
        ensure_eq!(got, Ok(()), "map with {} allocations available", need);
        ensure_eq!(
            space.table_frames(),
            frames_before + need as usize,
            "L2 frames used"
        );
        // Reads through the new pages see the kernel's RAM.
        let probe = r.start().as_u32() + 0x12_3450;
        let want = pa.as_u64() as u32 + 0x12_3450;
        // SAFETY: identity-mapped RAM, read only.
        let direct = unsafe { core::ptr::read_volatile(want as *const u32) };
        ensure_eq!(fault::read32(probe as usize), Ok(direct), "alias read");
        let mut rec = Rec::new();
        ensure!(
            space.unmap(range(VA_A, 40 << 20), &mut rec).is_ok(),
            "unmap"
        );
        rec.flush_and_free();
        free_tables(space, VA_A, 40 << 20)?;
        ensure_eq!(space.table_frames(), frames_before - 1, "tables freed");
        rt::frames::free(keep, 1);
        Ok(())
    })
}

fn free_tables_then_section() -> CaseResult {
    with_space(|space| {
        let pa = alloc_filled(256, 1 << 20, 0x4444)?;
        let r = range(VA_B, 1 << 20);
        ensure!(
            space
                .map(
                    range(VA_B, 4096),
                    pa,
                    Attributes::KERNEL_DATA,
                    MapSize::Page4K
                )
                .is_ok(),
            "map page"
        );
        let mut rec = Rec::new();
        ensure!(space.unmap(r, &mut rec).is_ok(), "unmap");
        rec.flush_and_free();
        // The (empty) table is still linked: a section-sized map uses pages.
        map_section_at_b(
            space,
            &mut rec,
            pa,
            MapSize::Large64K,
            "pages under an existing table",
        )?;
        let frames = space.table_frames();
        let g = VA_B & !0x3f_ffff;
        let gr = range(g, 4 << 20);
        ensure_eq!(space.free_tables(gr, gr, &mut rec), Ok(1), "group freed");
        ensure_eq!(rec.unlinked, 1, "one linked region in the group");
        ensure_eq!(space.table_frames(), frames - 1, "frame count");
        rec.flush_and_free();
        map_section_at_b(
            space,
            &mut rec,
            pa,
            MapSize::Section1M,
            "section once the table is gone",
        )?;
        rt::frames::free(pa, 256);
        Ok(())
    })
}

/// Maps the 1 MiB at `VA_B` to `pa` (filled with tag 0x4444) asking for a section, checks
/// the size the walker used (`why`), reads it back, then unmaps it and frees the frames
/// `rec` holds after the flush.
fn map_section_at_b(
    space: &mut Space,
    rec: &mut Rec,
    pa: PhysAddr,
    want: MapSize,
    why: &str,
) -> CaseResult {
    let r = range(VA_B, 1 << 20);
    ensure!(
        space
            .map(r, pa, Attributes::KERNEL_DATA, MapSize::Section1M)
            .is_ok(),
        "map"
    );
    let size = space.translate(VirtAddr::new(VA_B)).map(|t| t.mapping.size);
    ensure_eq!(size, Some(want), "{}", why);
    check_reads(VA_B, 1 << 20, pa, 0x4444)?;
    ensure!(space.unmap(r, rec).is_ok(), "unmap");
    rec.flush_and_free();
    Ok(())
}

/// A user page at the same VA in two processes.
const USER_VA: u32 = 0x1000_0000;

fn user_space(tag: u32) -> Result<(Space, PhysAddr), ()> {
    let features = mmu::detect_features();
    let Ok(mut s) = AddressSpace::new(KernelMemory, Layout::User { n: 2 }, features) else {
        return Err(());
    };
    let pa = alloc_filled(1, 4096, tag)?;
    let ok = s
        .map(
            range(UART, 4096),
            PhysAddr::new(UART as u64),
            // Not global: a process space takes only ASID-tagged leaves.
            Attributes {
                global: false,
                ..Attributes::DEVICE
            },
            MapSize::Page4K,
        )
        .and_then(|()| {
            s.map(
                range(USER_VA, 4096),
                pa,
                Attributes::USER_DATA,
                MapSize::Page4K,
            )
        });
    if ok.is_err() {
        println!("    user map failed: {:?}", ok);
        return Err(());
    }
    Ok((s, pa))
}

/// Destroys a space whose table is no longer in any TTBR; frees everything after a flush.
fn destroy(space: Space) {
    struct Free {
        rec: Rec,
        l1: Option<(PhysAddr, usize)>,
    }
    impl UnmapSink for Free {
        fn leaf_cleared(&mut self, leaf: ClearedLeaf) {
            self.rec.leaf_cleared(leaf)
        }
        fn leaf_changed(&mut self, leaf: ChangedLeaf) {
            self.rec.leaf_changed(leaf)
        }
        fn flush_now(&mut self) {
            self.rec.flush_now()
        }
        fn table_unlinked(&mut self, va: VirtAddr, span: u64, global: bool) {
            self.rec.table_unlinked(va, span, global)
        }
        fn table_memory_freed(&mut self, pa: PhysAddr, frames: usize) {
            if frames == 1 {
                self.rec.table_memory_freed(pa, frames);
            } else {
                self.l1 = Some((pa, frames));
            }
        }
    }
    let mut f = Free {
        rec: Rec::new(),
        l1: None,
    };
    let _ = space.destroy(&mut f);
    f.rec.flush_and_free();
    // A one-frame L1 (user layout with n >= 2) came through `rec`; a bigger one here.
    if let Some((pa, frames)) = f.l1 {
        rt::frames::free(pa, frames);
    }
}

fn split_and_switch() -> CaseResult {
    let guard = SPACE.lock();
    let Some(main_space) = guard.as_ref() else {
        return Err(());
    };
    let features = mmu::detect_features();
    // The kernel half: RAM from 1 GiB up.
    let Ok(mut kernel) = AddressSpace::new(KernelMemory, Layout::Kernel { n: 2 }, features) else {
        return Err(());
    };
    ensure!(
        kernel
            .map(
                range(RAM_BASE as u32, rt::ram_size()),
                PhysAddr::new(RAM_BASE),
                Attributes::KERNEL_IMAGE,
                MapSize::Super16M
            )
            .is_ok(),
        "kernel map"
    );
    let (a, pa_a) = user_space(0xaaaa)?;
    let (b, pa_b) = user_space(0xbbbb)?;
    let want_a = (pa_a.as_u64() as u32) ^ MAGIC ^ 0xaaaa;
    let want_b = (pa_b.as_u64() as u32) ^ MAGIC ^ 0xbbbb;
    // SAFETY: below 1 GiB the current TTBR0 (the main space) maps the UART; from 1 GiB up
    // `kernel` maps RAM exactly as the main space does.
    ensure!(unsafe { mmu::set_split(2, kernel.root()) }.is_ok(), "split");
    println!("    TTBCR.N = 2: kernel through TTBR1 at {}", kernel.root());
    let raw = rt::flag("raw-switch");
    let switch = |s: &Space, asid: u8| -> bool {
        if raw {
            // The bug the variant plays: TTBR0 rewritten alone, no ASID, no flush.
            dsb_ishst();
            TTBR0.set(mmu::ttbr_value(s.root()));
            isb();
            true
        } else {
            // SAFETY: each user space maps the UART; everything else used is in TTBR1.
            unsafe { mmu::activate(s.root(), Asid(asid)) }.is_ok()
        }
    };
    let mut result = Ok(());
    for (space, asid, want, name) in [
        (&a, 2, want_a, "A"),
        (&b, 3, want_b, "B"),
        (&a, 2, want_a, "A"),
    ] {
        if !switch(space, asid) {
            result = Err(());
            break;
        }
        let got = fault::read32_user(USER_VA as usize);
        if got != Ok(want) {
            println!(
                "    wrong context: process {} read {:x?}, its page holds {:#x}",
                name, got, want
            );
            result = Err(());
            break;
        }
        // Kernel memory through TTBR1 is not user accessible.
        if fault::read32_user(RAM_BASE as usize + 0x10_0000).is_ok() {
            println!("    user read of kernel RAM succeeded");
            result = Err(());
            break;
        }
    }
    // Back to the single table.
    // SAFETY: the main space maps everything this kernel uses.
    let back = unsafe {
        mmu::activate(main_space.root(), Asid(1)).is_ok()
            && mmu::set_split(0, main_space.root()).is_ok()
    };
    flush_all();
    println!("    back on the main space (TTBCR.N = 0): {}", back);
    ensure!(back, "switch back");
    destroy(a);
    destroy(b);
    destroy(kernel);
    rt::frames::free(pa_a, 1);
    rt::frames::free(pa_b, 1);
    result
}

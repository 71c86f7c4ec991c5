//! qemu: cpu=cortex-a15,cortex-a7 smp=1 mem=256
//! timeout: 60
//! variant: corrupt_answer arg=corrupt=answer expect=fail "MISMATCH"
//! variant: corrupt_perm arg=corrupt=perm expect=fail "MISMATCH"
//! variant: corrupt_table arg=corrupt=table expect=fail "MISMATCH"
//!
//! The hardware walker is the oracle for the crate's short-descriptor tables.
//!
//! The kernel runs on an `AddressSpace` built by the crate (RAM identity-mapped global
//! kernel RW with supersections, the UART as a device page), switched to with
//! `arch::mmu::activate` after `enable_tex_remap`. Then, from a printed seed (`seed=N` to
//! replay), it maps random ranges of all four sizes with random attributes, some backed by
//! real frames filled with a pattern, some at made-up physical addresses (never accessed).
//! For every VA of a sample (both sides of every mapping edge, inside every mapping, and
//! random VAs over the whole 4 GiB) it compares three answers:
//!
//! - the intent (the list of mappings the test asked for),
//! - `AddressSpace::translate`,
//! - the hardware: `ATS1CPR`, `ATS1CPW`, `ATS1CUR`, `ATS1CUW` and `PAR` — same PA (PA[31:24]
//!   for supersections, which `PAR` reports that way), same fault/no-fault, and a
//!   permission fault exactly where `translate`'s access permissions forbid the access.
//!
//! The short-descriptor `PAR` of QEMU reports no memory attributes, so shareability is
//! checked on the registers instead: `PRRR` gives the kernel's shareable RAM (`NS1`,
//! `NOSn` of its slot) the inner shareable domain, and the walks (`TTBR0.S`/`NOS`) are
//! inner shareable where `arch::mmu::walk_attributes` says the core is coherent,
//! non-shareable otherwise.
//!
//! It also reads through a sample of the backed mappings (the data must come from the
//! expected frame) and probes a sample of VAs that must fault for a privileged read.
//! Variants give the checker teeth, each must fail: `corrupt=answer` falsifies the output
//! address `translate` gave for one VA and `corrupt=perm` only its permissions (user RW
//! reported as kernel RW), both after the intent check, so only the hardware comparison
//! can catch them; `corrupt=table` rewrites one live descriptor behind the crate's back
//! (the intent check and the reads through the mapping must catch it).

#![no_std]
#![no_main]

#[path = "oracle_support/mod.rs"]
mod support;

use armv7_mm::arch::ats::{ats1cpr, ats1cpw, ats1cur, ats1cuw, ParResult};
use armv7_mm::arch::mmu;
use armv7_mm::short::{Access, AddressSpace, Attributes, Execute, Features, Layout, Translation};
use armv7_mm::{Asid, MapSize, PhysAddr, VirtAddr};
use rt::fault::{self, FaultClass};
use rt::frames::{KernelMemory, RAM_BASE};
use rt::{ensure, ensure_eq, println, Case, CaseResult};
use spin::Mutex;
use support::{
    alloc_filled, compare_sampled, flush_all, kernel_intent, pattern, random_memory, range, Intent,
    Oracle, Rec, Rng, Tally, World,
};

rt::entry!(main);

type Space = AddressSpace<KernelMemory>;

static SPACE: Mutex<Option<Space>> = Mutex::new(None);

const UART: u32 = 0x0900_0000;
use support::MAX_MAPPINGS;

fn main() -> ! {
    rt::mmu::enable_identity(rt::ram_size());
    let features = mmu::detect_features();
    println!("oracle: features {:?}", features);
    match build_kernel_space(features) {
        Ok(space) => *SPACE.lock() = Some(space),
        Err(()) => rt::fail_now(),
    }
    rt::cases::run(&[
        Case {
            name: "kernel_runs_on_crate_tables",
            run: kernel_runs_on_crate_tables,
        },
        Case {
            name: "oracle",
            run: oracle,
        },
    ])
}

/// RAM (identity, global, kernel RW, executable) and the UART (device page), then TEX
/// remap on and `activate`.
fn build_kernel_space(features: Features) -> Result<Space, ()> {
    let mut space = match AddressSpace::new(KernelMemory, Layout::Whole, features) {
        Ok(s) => s,
        Err(e) => {
            println!("oracle: cannot create the address space: {:?}", e);
            return Err(());
        }
    };
    let ram = range(RAM_BASE, rt::ram_size());
    let uart = range(UART as u64, 4096);
    let r1 = space.map(
        ram,
        PhysAddr::new(RAM_BASE),
        Attributes::KERNEL_IMAGE,
        MapSize::Super16M,
    );
    let r2 = space.map(
        uart,
        PhysAddr::new(UART as u64),
        Attributes::DEVICE,
        MapSize::Page4K,
    );
    if r1.is_err() || r2.is_err() {
        println!("oracle: kernel map failed: {:?} {:?}", r1, r2);
        return Err(());
    }
    // SAFETY: the new tables map RAM (code, data, stacks, tables) and the UART exactly as
    // the boot map does, with the same memory types under remap.
    unsafe {
        mmu::enable_tex_remap();
        if let Err(e) = mmu::activate(space.root(), Asid(1)) {
            println!("oracle: activate failed: {:?}", e);
            return Err(());
        }
    }
    println!(
        "oracle: running on the crate's tables (root {}, {} KiB of tables)",
        space.root(),
        space.table_bytes() / 1024
    );
    Ok(space)
}

/// The shareability domain of short-descriptor walks with this `TTBR` (`S` bit 1, `NOS`
/// bit 5).
fn walk_domain(ttbr: u32) -> &'static str {
    match (ttbr & 1 << 1 != 0, ttbr & 1 << 5 != 0) {
        (false, _) => "non-shareable",
        (true, false) => "outer",
        (true, true) => "inner",
    }
}

/// The shareability domain `prrr` gives Normal memory with `attrs` (`NS0`/`NS1` at 18/19,
/// `NOSn` at `24 + n` for its slot `n = TEX[0]:C:B`).
fn normal_domain(prrr: u32, attrs: Attributes) -> &'static str {
    let n = u32::from(attrs.memory.remap_index());
    let bit = |b: u32| prrr >> b & 1 != 0;
    match (bit(18 + u32::from(attrs.shareable)), bit(24 + n)) {
        (false, _) => "non-shareable",
        (true, false) => "outer",
        (true, true) => "inner",
    }
}

fn kernel_runs_on_crate_tables() -> CaseResult {
    use armv7_mm::arch::cp15::{PRRR, TTBR0};
    use tock_registers::interfaces::Readable;
    let guard = SPACE.lock();
    let Some(space) = guard.as_ref() else {
        return Err(());
    };
    ensure_eq!(
        TTBR0.get() & !0x3fff,
        space.root().as_u64() as u32,
        "TTBR0 is the crate's L1"
    );
    ensure_eq!(mmu::current_asid(), Asid(1), "ASID after activate");
    // Shareable RAM is inner shareable, the domain of the barriers and TLB broadcasts.
    ensure_eq!(
        normal_domain(PRRR.get(), Attributes::KERNEL_IMAGE),
        "inner",
        "shareable RAM under PRRR {:#x}",
        PRRR.get()
    );
    // The walks are inner shareable too on a core that takes part in coherency, and
    // non-shareable (cacheable) on one that does not (QEMU reads ACTLR.SMP as 0):
    // `mmu::walk_attributes`, Linux's TTB_FLAGS_SMP / TTB_FLAGS_UP.
    let want = if mmu::walk_attributes().shareable() {
        "inner"
    } else {
        "non-shareable"
    };
    ensure_eq!(
        walk_domain(TTBR0.get()),
        want,
        "TTBR0 walks (S, NOS): {:#x}",
        TTBR0.get()
    );
    static WORD: u32 = 0x1234_5678;
    let va = core::ptr::addr_of!(WORD) as u32;
    let t = space.translate(VirtAddr::new(va));
    ensure!(t.is_some(), "image not mapped");
    ensure_eq!(
        ParResult::decode(ats1cpr(va)),
        ParResult::Ok {
            pa: va & 0xff00_0000,
            supersection: true
        },
        "image through a supersection"
    );
    ensure_eq!(
        fault::read32(va as usize),
        Ok(0x1234_5678),
        "read through the crate's tables"
    );
    Ok(())
}

// ----- random mappings -------------------------------------------------------------------

fn random_attrs(rng: &mut Rng, features: Features) -> Attributes {
    let memory = random_memory(rng);
    let access = match rng.below(6) {
        0 => Access::None,
        1 => Access::KernelRw,
        2 => Access::KernelRo,
        3 => Access::KernelRwUserRo,
        4 => Access::UserRw,
        _ => Access::UserRo,
    };
    let execute = match rng.below(3) {
        0 => Execute::Never,
        1 => Execute::Anywhere,
        _ if features.pxn => Execute::UserOnly,
        _ => Execute::Never,
    };
    Attributes {
        memory,
        access,
        // Device and strongly-ordered memory is execute-never (`map` refuses it otherwise).
        execute: if memory.is_normal() {
            execute
        } else {
            Execute::Never
        },
        global: rng.below(2) == 0,
        shareable: rng.below(2) == 0,
    }
}

/// VA windows for random mappings: clear of the UART, RAM and the vectors.
const WINDOWS: [(u64, u64); 2] = [(0x1000_0000, 0x4000_0000), (0x8000_0000, 0xf000_0000)];

fn build_random(space: &mut Space, rng: &mut Rng, world: &mut World, features: Features) {
    let (mut refused, mut backed_super) = (0, 0);
    let mut by_size = [0usize; 4];
    let mut attempts = 0;
    while world.count < MAX_MAPPINGS - 8 && attempts < 4 * MAX_MAPPINGS {
        attempts += 1;
        let (class, size, units) = match rng.below(10) {
            0 => (3, 16u64 << 20, 1 + rng.below(2)),
            1 | 2 => (2, 1 << 20, 1 + rng.below(3)),
            3..=5 => (1, 64 << 10, 1 + rng.below(4)),
            _ => (0, 4096, 1 + rng.below(8)),
        };
        let len = size * units;
        let (lo, hi) = WINDOWS[rng.below(2) as usize];
        let slots = (hi - lo - len) / size;
        let va = (lo + rng.below(slots) * size) as u32;
        let max = [
            MapSize::Page4K,
            MapSize::Large64K,
            MapSize::Section1M,
            MapSize::Super16M,
        ][class];
        // Back small ones (and a couple of supersections) with real frames.
        let want_backed = match class {
            3 => backed_super < 2 && rng.below(2) == 0,
            2 => rng.below(3) == 0,
            _ => rng.below(2) == 0,
        };
        let mut backed = None;
        let pa = if want_backed {
            let frames = (len / 4096) as usize;
            match alloc_filled(frames, size as usize) {
                Some(pa) => {
                    backed = Some((pa, frames));
                    pa.as_u64()
                }
                None => continue,
            }
        } else if class == 3 && features.pa40 && rng.below(3) == 0 {
            // A 40-bit supersection address (translated, never accessed).
            (1 + rng.below(0xff)) << 32 | (rng.below(256) << 24)
        } else {
            // Made-up address in the top GiB, aligned to the size.
            (0xc000_0000 + rng.below((0x4000_0000 - len) / size) * size) & !(size - 1)
        };
        let attrs = random_attrs(rng, features);
        match space.map(range(va as u64, len), PhysAddr::new(pa), attrs, max) {
            Ok(()) => {
                by_size[class] += 1;
                if class == 3 && backed.is_some() {
                    backed_super += 1;
                }
                world.push(Intent {
                    va: u64::from(va),
                    len,
                    pa,
                    attrs,
                    backed,
                    readable: backed.is_some(),
                });
            }
            Err(_) => {
                refused += 1;
                if let Some((pa, frames)) = backed {
                    rt::frames::free(pa, frames);
                }
            }
        }
    }
    println!(
        "oracle: {} mappings (16M x{}, 1M x{}, 64K x{}, 4K x{}), {} refused (overlap/PXN)",
        world.count, by_size[3], by_size[2], by_size[1], by_size[0], refused
    );
}

// ----- the comparison --------------------------------------------------------------------

/// What the hardware must say for `t` under one permission check.
fn expected(t: Option<&Translation>, user: bool, write: bool) -> Expect {
    match t {
        None => Expect::Translation,
        Some(t) if !t.mapping.attrs.access.allows(user, write) => Expect::Permission,
        Some(t) => Expect::Pa {
            pa: t.pa.as_u64(),
            supersection: t.mapping.size == MapSize::Super16M,
        },
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Translation,
    Permission,
    Pa { pa: u64, supersection: bool },
}

fn matches(e: Expect, par: ParResult) -> bool {
    match (e, par) {
        (Expect::Translation, p) => p.is_translation_fault(),
        (Expect::Permission, p) => p.is_permission_fault(),
        (
            Expect::Pa {
                pa,
                supersection: true,
            },
            ParResult::Ok {
                pa: got,
                supersection,
            },
        ) => supersection && got == (pa as u32) & 0xff00_0000,
        (
            Expect::Pa {
                pa,
                supersection: false,
            },
            ParResult::Ok {
                pa: got,
                supersection,
            },
        ) => !supersection && pa < 1 << 32 && got == (pa as u32) & 0xffff_f000,
        _ => false,
    }
}

fn oracle() -> CaseResult {
    let seed = support::seed(0x0dd_ba11_5eed, "oracle");
    let corrupt = rt::arg("corrupt");
    let mut rng = Rng(seed | 1);
    let mut guard = SPACE.lock();
    let Some(space) = guard.as_mut() else {
        return Err(());
    };
    let features = space.features();
    let frames_before = space.table_frames();
    let mut world = World::new();
    build_random(space, &mut rng, &mut world, features);
    println!(
        "oracle: {} KiB of tables ({} L2 frames of 4 x 1 KiB tables)",
        space.table_bytes() / 1024,
        space.table_frames()
    );

    // Teeth: rewrite one live descriptor of a backed small mapping behind the crate's back
    // (its output address moves one 4 KiB frame), then flush.
    if corrupt == Some("table") {
        let small_backed = |i: &&Intent| {
            i.backed.is_some()
                && i.attrs.access.allows(false, false)
                && space
                    .translate(VirtAddr::new(i.va as u32))
                    .is_some_and(|t| t.mapping.size == MapSize::Page4K)
        };
        if let Some(i) = world.intents[..world.count]
            .iter()
            .flatten()
            .find(small_backed)
        {
            if let Some(p) = space.entry_ptr_for_test(VirtAddr::new(i.va as u32)) {
                // SAFETY: a word of our own live L2 table; the test owns the kernel.
                unsafe {
                    p.as_ptr()
                        .write_volatile(p.as_ptr().read_volatile() ^ 0x1000)
                };
                flush_all();
                println!("oracle: corrupted the descriptor of {:#010x}", i.va);
            }
        }
    }

    let mut tally = Tally::new();
    let oracle = Oracle {
        ops: [
            (ats1cpr, false, false, "ATS1CPR"),
            (ats1cpw, false, true, "ATS1CPW"),
            (ats1cur, true, false, "ATS1CUR"),
            (ats1cuw, true, true, "ATS1CUW"),
        ],
        decode: ParResult::decode,
        expected,
        matches,
    };
    let n = compare_sampled(
        &oracle,
        &mut tally,
        &world,
        &mut rng,
        rt::ram_size() + (16 << 20),
        |va| space.translate(va),
        |va| kernel_intent(va, rt::ram_size()),
        corrupt,
        "oracle",
    );
    println!("oracle: {} VAs sampled", n);

    // Data through the mappings, and faults where a privileged read is not allowed.
    let (mut reads, mut faults) = (0u32, 0u32);
    for i in world.intents[..world.count].iter().flatten() {
        let pages = i.len / 4096;
        let first = i.va;
        let last = i.end() - 4096;
        let picks = [
            first,
            last,
            first + rng.below(pages) * 4096,
            first + rng.below(pages) * 4096,
        ];
        for page in picks {
            for off in [0u64, 0x800, 0xffc] {
                let va = (page + off) as u32;
                let t = space.translate(VirtAddr::new(va));
                let can_read = t.is_some_and(|t| t.mapping.attrs.access.allows(false, false));
                if can_read && i.backed.is_none() {
                    // A made-up PA: never accessed.
                    continue;
                }
                match (can_read, fault::read32(va as usize)) {
                    (true, Ok(v)) => {
                        reads += 1;
                        let pa = (i.pa + (va as u64 - i.va)) as u32;
                        if v != pattern(pa as u64) {
                            tally.mismatch(format_args!(
                                "{:#010x}: read {:#x}, frame {:#x} holds {:#x}",
                                va,
                                v,
                                pa,
                                pattern(pa as u64)
                            ));
                        }
                    }
                    (false, Err(f)) => {
                        faults += 1;
                        if f.class() != FaultClass::Permission {
                            tally.mismatch(format_args!(
                                "{:#010x}: expected a permission fault, got {:?}",
                                va,
                                f.class()
                            ));
                        }
                    }
                    (false, Ok(v)) => tally.mismatch(format_args!(
                        "{:#010x}: read {:#x} where PL1 reads are forbidden",
                        va, v
                    )),
                    (true, Err(f)) => {
                        tally.mismatch(format_args!("{:#010x}: read faulted ({:?})", va, f.class()))
                    }
                }
                tally.checked += 1;
            }
        }
    }
    println!(
        "oracle: {} reads through mappings matched their frame, {} forbidden reads faulted",
        reads, faults
    );
    println!(
        "oracle: {} translations checked, {} mismatches",
        tally.checked, tally.mismatches
    );

    // Tear the random mappings down: unmap, flush, free the frames and the tables.
    let mut rec = Rec::new();
    for (lo, hi) in WINDOWS {
        if let Err(e) = space.unmap(range(lo, hi - lo), &mut rec) {
            println!("    unmap failed: {:?}", e);
            return Err(());
        }
    }
    let leaves = rec.leaves;
    flush_all();
    for (lo, hi) in WINDOWS {
        let r = range(lo, hi - lo);
        if space.free_tables(r, r, &mut rec).is_err() {
            return Err(());
        }
    }
    flush_all();
    rec.free_tables();
    world.free_backed();
    println!(
        "oracle: torn down: {} leaves reported, tables back to {} L2 frames",
        leaves,
        space.table_frames()
    );
    ensure_eq!(
        space.table_frames(),
        frames_before,
        "L2 frames after free_tables"
    );
    ensure_eq!(tally.mismatches, 0, "mismatches");
    ensure!(n >= 4000, "only {} VAs sampled", n);
    Ok(())
}

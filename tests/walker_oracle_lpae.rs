//! qemu: cpu=cortex-a15,cortex-a7 smp=1 mem=5120
//! timeout: 60
//! variant: corrupt_answer arg=corrupt=answer expect=fail "MISMATCH"
//! variant: corrupt_perm arg=corrupt=perm expect=fail "MISMATCH"
//! variant: corrupt_table arg=corrupt=table expect=fail "MISMATCH"
//! variant: corrupt_high arg=corrupt=high expect=fail "MISMATCH"
//! variant: corrupt_split arg=corrupt=split expect=fail "MISMATCH"
//! variant: corrupt_t1sz arg=corrupt=t1sz expect=fail "MISMATCH"
//!
//! The hardware walker is the oracle for the crate's long-descriptor (LPAE) tables.
//!
//! QEMU's `virt` machine with `-m 5120M` gives a Cortex-A15 or Cortex-A7 guest RAM from
//! `0x4000_0000` to `0x1_8000_0000`: 3 GiB of it above 4 GiB, reachable only through
//! 40-bit output addresses. The test runtime manages the low 1 GiB; this test owns the
//! rest.
//!
//! The kernel switches from the runtime's short-descriptor boot map to a
//! `lpae::AddressSpace` built by the crate (`TTBCR.EAE = 1`, `arch::lpae::enable`): low
//! RAM identity-mapped by one 1 GiB block, the UART by a page. Then, from a printed seed
//! (`seed=N` to replay), it maps random 4 KiB pages and 2 MiB blocks with random
//! attributes in `[0x1000_0000, 0x4000_0000)`, some backed by real frames filled with a
//! pattern, some at made-up 40-bit physical addresses (never accessed); a 1 GiB block at
//! a made-up 40-bit address at `0x8000_0000`; and a 1 GiB block of the RAM at
//! `0x1_0000_0000` at `0xc000_0000`. For every VA of a sample (both sides of every mapping
//! edge, inside every mapping, random VAs over the whole 4 GiB) it compares the intent,
//! `AddressSpace::translate`, and the hardware (`ATS1CPR`/`CPW`/`CUR`/`CUW` with the 64-bit
//! `PAR`: 40-bit PA, `MAIR` attribute byte, fault kind, and for cacheable Normal memory the
//! shareability `SH`: `0b11` inner shareable where the mapping is shareable, `0b00` where
//! it is not).
//!
//! It also reads through the backed mappings (PL1, and PL0 where user access is allowed or
//! must fault), writes where writes must fault, and checks memory above 4 GiB: patterns
//! written through the 1 GiB block read back, and a page mapped at `0x1_0000_0000 | L` for
//! a low frame `L` holds what is written through it while `L` keeps its own contents (a
//! walker that dropped `PA[39:32]` would write `L`).
//!
//! Table memory stays below 4 GiB here. Tried on QEMU 7.2: with the root at
//! `0x1_0000_0000` the walk faults at level 1, and with a root below 4 GiB whose level-2
//! table is at `0x1_0000_2000` it faults at level 2, although both tables read back right
//! through a data mapping: its walker reads descriptors of a 32-bit guest at their address
//! modulo 4 GiB (its page-table loads go through a TLB keyed by the 32-bit
//! `target_ulong`, it appears). That tables above 4 GiB are encoded right is a host test
//! (`lpae::tests::tables_above_4_gib`).
//!
//! Case `split_blocks_match_the_walker` (issue 17) splits blocks with `unmap_split` and
//! `protect_split`: two 2 MiB blocks of RAM (a page unmapped in one, a page made read-only
//! in the other) and a 1 GiB block at a made-up 40-bit address (a guard page), and checks
//! every page of the 2 MiB blocks and a sample of the GiB through the four `ATS` operations
//! against `translate`, and reads through the split RAM.
//!
//! Case `t1sz_split_matches_the_walker` (issue 17) runs Linux's LPAE 3G/1G split:
//! `TTBCR.T0SZ = 0`, `T1SZ = 2` (`arch::lpae::enable_t1sz`), a `Layout::UserLow` process
//! table in `TTBR0` for the VAs below `0xC000_0000` (low RAM, the UART and random mappings,
//! all not-global) and a `Layout::KernelHigh` table in `TTBR1` for the top GiB, walked from
//! a level-2 root: a 64 MiB linear map of RAM at `0xC000_0000` and random pages and 2 MiB
//! blocks above it. Sampled VAs over the whole 4 GiB are checked, through the space that
//! owns each, against the four `ATS` operations; a word written through the linear map is
//! read back through the identity map; each space refuses the other part
//! (`translate_checked`), and activating the whole-space table under this `TTBCR` is
//! refused with `T1szMismatch`. Variant `corrupt=t1sz` programs `T1SZ = 1` for the same
//! tables (`TTBR1` then walks the level-2 root as a level-1 table) and must mismatch.
//!
//! Variants give the checker teeth, each must fail: `corrupt=answer` falsifies the output
//! address `translate` gave for one VA, `corrupt=perm` only its permissions, both after the
//! intent check; `corrupt=table` rewrites one live descriptor behind the crate's back;
//! `corrupt=high` drops `PA[32]` from the high page's descriptor (the 32-bit truncation the
//! alias check exists for).

#![no_std]
#![no_main]

#[path = "oracle_support/mod.rs"]
mod support;

use armv7_mm::arch::ats::{ats1cpr_64, ats1cpw_64, ats1cur_64, ats1cuw_64, Par64Result};
use armv7_mm::arch::cp15::{TTBCR, TTBCR_BITS, TTBR0_64};
use armv7_mm::arch::lpae as arch_lpae;
use armv7_mm::lpae::{AddressSpace, Features, Layout, Translation};
use armv7_mm::short::{Access, Attributes, Execute, MemoryType};
use armv7_mm::{Asid, MapSize, PhysAddr, VirtAddr};
use rt::fault::{self, FaultClass};
use rt::frames::{KernelMemory, RAM_BASE};
use rt::{ensure, ensure_eq, println, Case, CaseResult};
use spin::Mutex;
use support::{
    alloc_filled, compare_sampled, flush_all, kernel_intent, pattern, random_memory, range, Intent,
    Oracle, Rec, Rng, Tally, World,
};
use tock_registers::interfaces::Readable;

rt::entry!(main);

type Space = AddressSpace<KernelMemory>;

static SPACE: Mutex<Option<Space>> = Mutex::new(None);

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
const UART: u32 = 0x0900_0000;
use support::MAX_MAPPINGS;
/// Low RAM the runtime manages, identity-mapped by one 1 GiB block.
const LOW_RAM: u64 = GIB;
/// The random window: pages and 2 MiB blocks.
const WINDOW: (u64, u64) = (0x1000_0000, 0x4000_0000);
/// A 1 GiB block at a made-up 40-bit address (never accessed).
const FAKE_GIB_VA: u64 = 0x8000_0000;
/// A 1 GiB block of RAM above 4 GiB.
const HIGH_GIB_VA: u64 = 0xc000_0000;
const HIGH_GIB_PA: u64 = 0x1_0000_0000;
/// Where the alias page of `0x1_0000_0000 | L` is mapped.
const ALIAS_VA: u64 = 0x0a00_0000;

fn main() -> ! {
    let ram = rt::ram_size();
    rt::mmu::enable_identity(ram.min(LOW_RAM));
    let Some(features) = arch_lpae::detect_features() else {
        println!("oracle-lpae: this CPU has no LPAE");
        rt::fail_now()
    };
    println!(
        "oracle-lpae: features {:?}, RAM {} MiB ({} MiB above 4 GiB)",
        features,
        ram >> 20,
        (RAM_BASE + ram).saturating_sub(1 << 32) >> 20
    );
    match build_kernel_space(features) {
        Ok(space) => *SPACE.lock() = Some(space),
        Err(()) => rt::fail_now(),
    }
    rt::cases::run(&[
        Case {
            name: "kernel_runs_on_crate_lpae_tables",
            run: kernel_runs_on_crate_tables,
        },
        Case {
            name: "oracle",
            run: oracle,
        },
        Case {
            name: "split_blocks_match_the_walker",
            run: split_blocks_match_the_walker,
        },
        Case {
            name: "t1sz_split_matches_the_walker",
            run: t1sz_split_matches_the_walker,
        },
    ])
}

/// Low RAM (identity, global, kernel RW, executable: one 1 GiB block) and the UART
/// (device page), then `TTBCR.EAE = 1` with this table in `TTBR0` and ASID 1.
fn build_kernel_space(features: Features) -> Result<Space, ()> {
    let mut space = match AddressSpace::new(KernelMemory, Layout::Whole, features) {
        Ok(s) => s,
        Err(e) => {
            println!("oracle-lpae: cannot create the address space: {:?}", e);
            return Err(());
        }
    };
    let r1 = space.map(
        range(RAM_BASE, LOW_RAM),
        PhysAddr::new(RAM_BASE),
        Attributes::KERNEL_IMAGE,
        MapSize::Block1G,
    );
    let r2 = space.map(
        range(UART as u64, 4096),
        PhysAddr::new(UART as u64),
        Attributes::DEVICE,
        MapSize::Page4K,
    );
    if r1.is_err() || r2.is_err() {
        println!("oracle-lpae: kernel map failed: {:?} {:?}", r1, r2);
        return Err(());
    }
    // SAFETY: the new tables map low RAM (code, data, stacks, tables) and the UART as the
    // boot map does, with the same memory types (MAIR slot = TEX/C/B of the boot map); the
    // boot map does not use TEX remap.
    if let Err(e) = unsafe { arch_lpae::enable(0, space.root(), Asid(1), PhysAddr::new(0)) } {
        println!("oracle-lpae: enable failed: {:?}", e);
        return Err(());
    }
    println!(
        "oracle-lpae: running on the crate's long-descriptor tables (root {}, {} KiB of tables)",
        space.root(),
        space.table_bytes() / 1024
    );
    Ok(space)
}

fn kernel_runs_on_crate_tables() -> CaseResult {
    let guard = SPACE.lock();
    let Some(space) = guard.as_ref() else {
        return Err(());
    };
    ensure!(TTBCR.is_set(TTBCR_BITS::EAE), "TTBCR.EAE");
    ensure_eq!(
        TTBR0_64.get() & 0xff_ffff_ffff,
        space.root().as_u64(),
        "TTBR0 is the crate's root"
    );
    ensure_eq!(arch_lpae::current_asid(), Asid(1), "ASID in TTBR0");
    static WORD: u32 = 0x1234_5678;
    let va = core::ptr::addr_of!(WORD) as u32;
    let t = space.translate(VirtAddr::new(va));
    ensure!(
        t.is_some_and(|t| t.mapping.size == MapSize::Block1G),
        "image in a 1 GiB block: {:?}",
        t
    );
    match Par64Result::decode(ats1cpr_64(va)) {
        Par64Result::Ok { pa, attr, sh } => {
            ensure_eq!(pa, u64::from(va) & !0xfff, "PAR.PA of the image");
            ensure_eq!(attr, 0xff, "PAR.ATTR: write-back (MAIR slot 7)");
            // Shareable RAM is in the walks' domain: inner shareable, as the barriers and
            // TLB broadcasts are.
            ensure_eq!(sh, SH_INNER, "PAR.SH: inner shareable");
            // The walks: inner shareable on a core in coherency, non-shareable on one
            // outside it (QEMU reads ACTLR.SMP as 0), as `arch::lpae::enable` chooses.
            let walks = if armv7_mm::arch::mmu::walk_attributes().shareable() {
                u32::from(SH_INNER)
            } else {
                0
            };
            ensure_eq!(TTBCR.read(TTBCR_BITS::SH0), walks, "TTBCR.SH0 (walks)");
        }
        p => {
            println!("    PAR {:x?}", p);
            return Err(());
        }
    }
    ensure_eq!(
        fault::read32(va as usize),
        Ok(0x1234_5678),
        "read through the crate's tables"
    );
    Ok(())
}

// ----- random mappings -------------------------------------------------------------------

fn random_attrs(rng: &mut Rng) -> Attributes {
    let memory = random_memory(rng);
    // The four permissions long descriptors have.
    let access = match rng.below(4) {
        0 => Access::KernelRw,
        1 => Access::KernelRo,
        2 => Access::UserRw,
        _ => Access::UserRo,
    };
    let execute = match rng.below(3) {
        0 => Execute::Never,
        1 => Execute::Anywhere,
        _ => Execute::UserOnly,
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

fn build_random(space: &mut Space, rng: &mut Rng, world: &mut World) {
    build_random_in(space, rng, world, WINDOW, false, MAX_MAPPINGS - 8);
}

/// [`build_random`] in the VAs `window` until the world has `until` mappings; `process`
/// makes every leaf not-global (a process table takes no global leaf).
fn build_random_in(
    space: &mut Space,
    rng: &mut Rng,
    world: &mut World,
    window: (u64, u64),
    process: bool,
    until: usize,
) {
    let (mut refused, mut by_size) = (0, [0usize; 2]);
    let mut attempts = 0;
    while world.count < until && attempts < 4 * MAX_MAPPINGS {
        attempts += 1;
        let (class, size, units) = match rng.below(10) {
            0..=2 => (1, 2 * MIB, 1 + rng.below(3)),
            _ => (0, 4096u64, 1 + rng.below(8)),
        };
        let len = size * units;
        let (lo, hi) = window;
        let va = lo + rng.below((hi - lo - len) / size) * size;
        let max = [MapSize::Page4K, MapSize::Block2M][class];
        let want_backed = rng.below(if class == 1 { 4 } else { 2 }) == 0;
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
        } else if rng.below(2) == 0 {
            // A made-up 40-bit address (translated, never accessed).
            ((2 + rng.below(0xfd)) << 32 | rng.below(1 << 32)) & !(size - 1)
        } else {
            // A made-up address in the top GiB below 4 GiB.
            (0xc000_0000 + rng.below(GIB - len)) & !(size - 1)
        };
        let mut attrs = random_attrs(rng);
        attrs.global &= !process;
        match space.map(range(va, len), PhysAddr::new(pa), attrs, max) {
            Ok(()) => {
                by_size[class] += 1;
                world.push(Intent {
                    va,
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
        "oracle-lpae: {} mappings (2M x{}, 4K x{}), {} refused (overlap)",
        world.count, by_size[1], by_size[0], refused
    );
}

/// The two 1 GiB blocks and the alias page above 4 GiB; returns the alias page's low
/// frame `L` (the page maps `0x1_0000_0000 | L`).
fn build_big(space: &mut Space, rng: &mut Rng, world: &mut World) -> Result<PhysAddr, ()> {
    let fake = (1 + rng.below(0xfe)) << 32 | (rng.below(4) << 30);
    let high_ram = RAM_BASE + rt::ram_size() >= HIGH_GIB_PA + 2 * GIB;
    let blocks = [
        (FAKE_GIB_VA, fake, random_attrs(rng), false),
        (HIGH_GIB_VA, HIGH_GIB_PA, Attributes::KERNEL_DATA, true),
    ];
    for (va, pa, attrs, readable) in blocks {
        if let Err(e) = space.map(range(va, GIB), PhysAddr::new(pa), attrs, MapSize::Block1G) {
            println!("    1 GiB block at {:#x} -> {:#x}: {:?}", va, pa, e);
            return Err(());
        }
        world.push(Intent {
            va,
            len: GIB,
            pa,
            attrs,
            backed: None,
            readable: readable && high_ram,
        });
    }
    let Some(low) = alloc_filled(1, 4096) else {
        return Err(());
    };
    let high = HIGH_GIB_PA | low.as_u64();
    if high_ram {
        let attrs = Attributes::KERNEL_DATA;
        if let Err(e) = space.map(
            range(ALIAS_VA, 4096),
            PhysAddr::new(high),
            attrs,
            MapSize::Page4K,
        ) {
            println!("    alias page -> {:#x}: {:?}", high, e);
            return Err(());
        }
        world.push(Intent {
            va: ALIAS_VA,
            len: 4096,
            pa: high,
            attrs,
            backed: None,
            readable: false,
        });
    }
    Ok(low)
}

// ----- the comparison --------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Translation,
    Permission,
    /// `sh`: the `PAR.SH` cacheable Normal memory must report; `None` for non-cacheable
    /// Normal, Device and strongly-ordered memory, which the architecture may report as
    /// outer shareable whatever the descriptor says (newer QEMUs do).
    Pa {
        pa: u64,
        attr: u8,
        sh: Option<u8>,
    },
}

/// `SH` / `PAR.SH` / `TTBCR.SHn`: inner shareable.
const SH_INNER: u8 = 0b11;

/// The `PAR.SH` a mapping with `attrs` must report, where the architecture fixes it.
fn par_sh(attrs: Attributes) -> Option<u8> {
    match attrs.memory {
        MemoryType::NormalWriteBack
        | MemoryType::NormalWriteBackNoAllocate
        | MemoryType::NormalWriteThrough => Some(if attrs.shareable { SH_INNER } else { 0 }),
        _ => None,
    }
}

/// The `MAIR` byte of a memory type (what `PAR.ATTR` reports).
fn mair_byte(m: MemoryType) -> u8 {
    let slot = m.remap_index();
    let mair = if slot < 4 {
        armv7_mm::lpae::attrs::MAIR0
    } else {
        armv7_mm::lpae::attrs::MAIR1
    };
    (mair >> (8 * (slot % 4))) as u8
}

/// What the hardware must say for `t` under one permission check.
fn expected(t: Option<&Translation>, user: bool, write: bool) -> Expect {
    match t {
        None => Expect::Translation,
        Some(t) if !t.mapping.attrs.access.allows(user, write) => Expect::Permission,
        Some(t) => Expect::Pa {
            pa: t.pa.as_u64() & !0xfff,
            attr: mair_byte(t.mapping.attrs.memory),
            sh: par_sh(t.mapping.attrs),
        },
    }
}

fn matches(e: Expect, par: Par64Result) -> bool {
    match (e, par) {
        (Expect::Translation, p) => p.is_translation_fault(),
        (Expect::Permission, p) => p.is_permission_fault(),
        (
            Expect::Pa { pa, attr, sh },
            Par64Result::Ok {
                pa: got,
                attr: a,
                sh: got_sh,
            },
        ) => got == pa && a == attr && sh.is_none_or(|sh| sh == got_sh),
        _ => false,
    }
}

/// The hardware oracle over the four `ATS1C**` operations with the 64-bit `PAR`.
fn lpae_oracle() -> Oracle<u64, Par64Result, Expect> {
    Oracle {
        ops: [
            (ats1cpr_64, false, false, "ATS1CPR"),
            (ats1cpw_64, false, true, "ATS1CPW"),
            (ats1cur_64, true, false, "ATS1CUR"),
            (ats1cuw_64, true, true, "ATS1CUW"),
        ],
        decode: Par64Result::decode,
        expected,
        matches,
    }
}

fn oracle() -> CaseResult {
    let seed = support::seed(0x1a_e5ee_d000, "oracle-lpae");
    let corrupt = rt::arg("corrupt");
    let mut rng = Rng(seed | 1);
    let mut guard = SPACE.lock();
    let Some(space) = guard.as_mut() else {
        return Err(());
    };
    let frames_before = space.table_frames();
    let mut world = World::new();
    let low = build_big(space, &mut rng, &mut world)?;
    build_random(space, &mut rng, &mut world);
    println!(
        "oracle-lpae: {} KiB of tables ({} level-2/3 table frames)",
        space.table_bytes() / 1024,
        space.table_frames()
    );

    let mut tally = Tally::new();
    // Teeth: rewrite one live descriptor behind the crate's back, then flush.
    match corrupt {
        Some("table") => {
            let page = |i: &&Intent| {
                i.backed.is_some()
                    && space
                        .translate(VirtAddr::new(i.va as u32))
                        .is_some_and(|t| t.mapping.size == MapSize::Page4K)
            };
            if let Some(i) = world.intents[..world.count].iter().flatten().find(page) {
                corrupt_descriptor(space, i.va, 0x1000);
            }
        }
        Some("high") => corrupt_descriptor(space, ALIAS_VA, 1 << 32),
        _ => {}
    }

    let oracle = lpae_oracle();
    let n = compare_sampled(
        &oracle,
        &mut tally,
        &world,
        &mut rng,
        LOW_RAM,
        |va| space.translate(va),
        |va| kernel_intent(va, LOW_RAM),
        corrupt,
        "oracle-lpae",
    );
    println!("oracle-lpae: {} VAs sampled", n);

    let accesses = check_accesses(space, &world, &mut rng, &mut tally);
    println!(
        "oracle-lpae: {} reads through mappings matched their frame, {} PL0 reads and {} \
         writes faulted where they must",
        accesses.0, accesses.1, accesses.2
    );
    let before = tally.mismatches;
    let high = check_high_memory(&world, low, &mut tally);
    println!(
        "oracle-lpae: {} words above 4 GiB written and read back; alias page {}",
        high.0,
        match (high.1, tally.mismatches == before) {
            (false, _) => "not checked (no RAM there)",
            (true, true) => "and its low frame kept apart",
            (true, false) => "or its low frame WRONG",
        }
    );
    println!(
        "oracle-lpae: {} translations checked, {} mismatches",
        tally.checked, tally.mismatches
    );

    // Tear down: unmap, flush, free the tables, flush, free the frames.
    let mut rec = Rec::new();
    for (lo, hi) in [WINDOW, (ALIAS_VA, ALIAS_VA + 4096), (FAKE_GIB_VA, 1 << 32)] {
        if let Err(e) = space.unmap(range(lo, hi - lo), &mut rec) {
            println!("    unmap failed: {:?}", e);
            return Err(());
        }
    }
    let leaves = rec.leaves;
    flush_all();
    let all = range(0, 1 << 32);
    if space.free_tables(all, all, &mut rec).is_err() {
        return Err(());
    }
    flush_all();
    rec.free_tables();
    world.free_backed();
    rt::frames::free(low, 1);
    println!(
        "oracle-lpae: torn down: {} leaves reported, tables back to {} frames",
        leaves,
        space.table_frames()
    );
    ensure_eq!(
        space.table_frames(),
        frames_before,
        "table frames after free_tables"
    );
    ensure_eq!(tally.mismatches, 0, "mismatches");
    ensure!(n >= 4000, "only {} VAs sampled", n);
    ensure!(high.1, "no RAM above 4 GiB to check (needs -m 5120M)");
    Ok(())
}

/// Flips `bits` in the live descriptor that translates `va`, then flushes.
fn corrupt_descriptor(space: &Space, va: u64, bits: u64) {
    if let Some(p) = space.entry_ptr_for_test(VirtAddr::new(va as u32)) {
        // SAFETY: a descriptor of our own live table; the test owns the kernel.
        unsafe { p.as_ptr().write_volatile(p.as_ptr().read_volatile() ^ bits) };
        flush_all();
        println!("oracle-lpae: corrupted the descriptor of {:#010x}", va);
    }
}

/// Data through the backed mappings (PL1 reads; PL0 reads, which must fault without user
/// access; writes, which must fault on read-only mappings). Returns (reads, PL0 faults,
/// write faults).
fn check_accesses(
    space: &Space,
    world: &World,
    rng: &mut Rng,
    tally: &mut Tally,
) -> (u32, u32, u32) {
    let (mut reads, mut user_faults, mut write_faults) = (0, 0, 0);
    for i in world.intents[..world.count].iter().flatten() {
        if !i.readable || i.len >= GIB {
            continue;
        }
        let pages = i.len / 4096;
        let picks = [i.va, i.end() - 4096, i.va + rng.below(pages) * 4096];
        for page in picks {
            for off in [0u64, 0x800, 0xffc] {
                let va = (page + off) as u32;
                let pa = i.pa + (va as u64 - i.va);
                let Some(t) = space.translate(VirtAddr::new(va)) else {
                    tally.mismatch(format_args!("{:#010x}: not mapped", va));
                    continue;
                };
                let access = t.mapping.attrs.access;
                tally.checked += 3;
                match fault::read32(va as usize) {
                    Ok(v) if v == pattern(pa) => reads += 1,
                    got => tally.mismatch(format_args!(
                        "{:#010x}: read {:x?}, frame {:#x} holds {:#x}",
                        va,
                        got,
                        pa,
                        pattern(pa)
                    )),
                }
                match (access.allows(true, false), fault::read32_user(va as usize)) {
                    (true, Ok(v)) if v == pattern(pa) => {}
                    (false, Err(f)) if f.class() == FaultClass::Permission => user_faults += 1,
                    (want, got) => tally.mismatch(format_args!(
                        "{:#010x}: PL0 read allowed={} got {:x?}",
                        va, want, got
                    )),
                }
                // Writing the value already there changes nothing when it is allowed.
                // SAFETY: a frame this test allocated, mapped here.
                match (access.allows(false, true), unsafe {
                    fault::write32(va as usize, pattern(pa))
                }) {
                    (true, Ok(())) => {}
                    (false, Err(f)) if f.class() == FaultClass::Permission => write_faults += 1,
                    (want, got) => tally.mismatch(format_args!(
                        "{:#010x}: PL1 write allowed={} got {:x?}",
                        va, want, got
                    )),
                }
            }
        }
    }
    (reads, user_faults, write_faults)
}

/// RAM above 4 GiB: patterns through the 1 GiB block, and the alias page kept apart from
/// its low frame. Returns (words checked, alias checked).
fn check_high_memory(world: &World, low: PhysAddr, tally: &mut Tally) -> (u32, bool) {
    let high_ram = world.intents[..world.count]
        .iter()
        .flatten()
        .any(|i| i.va == HIGH_GIB_VA && i.readable);
    if !high_ram {
        return (0, false);
    }
    let mut words = 0;
    // Write a pattern at 64 offsets spread over the GiB (through the block), then read
    // all back: each word must come back from its own physical address.
    let offsets = (0..64u64).map(|k| k * (GIB / 64) + (k * 0x1234) % 0x1000 / 4 * 4);
    for off in offsets.clone() {
        let va = (HIGH_GIB_VA + off) as usize;
        // SAFETY: RAM above 4 GiB that this test owns, mapped kernel RW at `va`.
        if unsafe { fault::write32(va, pattern(HIGH_GIB_PA + off)) }.is_err() {
            tally.mismatch(format_args!("{:#010x}: write above 4 GiB faulted", va));
        }
    }
    for off in offsets {
        let va = (HIGH_GIB_VA + off) as usize;
        let want = pattern(HIGH_GIB_PA + off);
        tally.checked += 1;
        match fault::read32(va) {
            Ok(v) if v == want => words += 1,
            got => tally.mismatch(format_args!(
                "{:#010x} (PA {:#x}): read {:x?}, wrote {:#x}",
                va,
                HIGH_GIB_PA + off,
                got,
                want
            )),
        }
    }
    // The alias page: PA 0x1_0000_0000 | L. Through it, write; L must keep its pattern.
    let high = HIGH_GIB_PA | low.as_u64();
    let lo = low.as_u64() as usize;
    for off in [0u64, 0x800, 0xffc] {
        let va = (ALIAS_VA + off) as usize;
        // SAFETY: RAM above 4 GiB that this test owns, mapped kernel RW at `va`.
        let w = unsafe { fault::write32(va, pattern(high + off)) };
        tally.checked += 2;
        match (w, fault::read32(va)) {
            (Ok(()), Ok(v)) if v == pattern(high + off) => words += 1,
            got => tally.mismatch(format_args!(
                "{:#010x} (PA {:#x}): {:x?}",
                va,
                high + off,
                got
            )),
        }
        // SAFETY: reading our own low frame through the identity map.
        let v = unsafe { core::ptr::read_volatile((lo + off as usize) as *const u32) };
        if v != pattern(low.as_u64() + off) {
            tally.mismatch(format_args!(
                "low frame {:#x} changed to {:#x}: the write to PA {:#x} landed there",
                low.as_u64() + off,
                v,
                high + off
            ));
        }
    }
    let par = Par64Result::decode(ats1cpr_64(ALIAS_VA as u32));
    tally.checked += 1;
    if !matches!(par, Par64Result::Ok { pa, .. } if pa == high) {
        tally.mismatch(format_args!(
            "alias page: PAR {:x?}, want PA {:#x}",
            par, high
        ));
    }
    (words, true)
}

/// One `ATS` operation: the instruction, PL0, write, its name.
type AtsOp = (fn(u32) -> u64, bool, bool, &'static str);

/// Every VA of `vas` through the four `ATS` operations against `translate`; returns the
/// number of checks.
fn ats_agrees(space: &Space, vas: impl Iterator<Item = u64>) -> Result<u32, ()> {
    let ops: [AtsOp; 4] = [
        (ats1cpr_64, false, false, "ATS1CPR"),
        (ats1cpw_64, false, true, "ATS1CPW"),
        (ats1cur_64, true, false, "ATS1CUR"),
        (ats1cuw_64, true, true, "ATS1CUW"),
    ];
    let mut n = 0;
    for va in vas {
        let t = space.translate(VirtAddr::new(va as u32));
        for (op, user, write, name) in ops {
            let par = Par64Result::decode(op(va as u32));
            let want = expected(t.as_ref(), user, write);
            if !matches(want, par) {
                println!(
                    "    MISMATCH {} {:#x}: walker {:?}, translate {:?}",
                    name, va, par, want
                );
                return Err(());
            }
            n += 1;
        }
    }
    Ok(n)
}

fn split_blocks_match_the_walker() -> CaseResult {
    let mut guard = SPACE.lock();
    let Some(space) = guard.as_mut() else {
        return Err(());
    };
    let frames_before = space.table_frames();
    // The random window is empty again after the oracle case.
    let (va2, fake_pa) = (WINDOW.0, 0x42_4000_0000u64);
    let Some(pa) = alloc_filled(1024, 2 << 20) else {
        println!("    no 4 MiB of frames");
        return Err(());
    };
    let r2 = range(va2, 4 * MIB);
    let rg = range(FAKE_GIB_VA, GIB);
    ensure!(
        space
            .map(r2, pa, Attributes::KERNEL_DATA, MapSize::Block2M)
            .is_ok(),
        "map 2 x 2 MiB"
    );
    ensure!(
        space
            .map(
                rg,
                PhysAddr::new(fake_pa),
                Attributes::KERNEL_DATA,
                MapSize::Block1G
            )
            .is_ok(),
        "map 1 GiB"
    );
    flush_all();
    // Load the TLB with the blocks.
    for p in 0..1024u64 {
        let _ = fault::read32((va2 + p * 4096) as usize);
    }
    let (hole, ro, gap) = (
        va2 + 0x12_3000,
        va2 + 2 * MIB + 0xa_5000,
        FAKE_GIB_VA + 0x2345_6000,
    );
    let mut rec = Rec::new();
    ensure_eq!(
        space.unmap_split(range(hole, 4096), &mut rec),
        Ok(1),
        "unmap_split of a 2 MiB block"
    );
    let c = space.protect_split(range(ro, 4096), Access::KernelRo, Execute::Never, &mut rec);
    ensure!(
        matches!(c, Ok(Some(c)) if c.split == 1 && c.leaves == 1),
        "protect_split of a 2 MiB block: {:?}",
        c
    );
    ensure_eq!(
        space.unmap_split(range(gap, 4096), &mut rec),
        Ok(1),
        "unmap_split of a 1 GiB block"
    );
    // The gather's part (the splits flushed the blocks themselves).
    flush_all();
    ensure_eq!(
        space.table_frames(),
        frames_before + 4,
        "one table per 2 MiB, two for the GiB"
    );
    ensure!(
        space.translate(VirtAddr::new(hole as u32)).is_none(),
        "hole mapped"
    );
    ensure!(
        space.translate(VirtAddr::new(gap as u32)).is_none(),
        "guard page mapped"
    );
    if rt::arg("corrupt") == Some("split") {
        // Teeth: one page of a split table rewritten behind the crate's back.
        corrupt_descriptor(space, va2 + 0x5000, 0x1000);
    }
    // The intent: every page but the hole still translates to its own frame.
    for p in 0..1024u64 {
        let va = va2 + p * 4096;
        let t = space
            .translate(VirtAddr::new(va as u32))
            .map(|t| t.pa.as_u64());
        let want = (va != hole).then_some(pa.as_u64() + p * 4096);
        if t != want {
            println!(
                "    MISMATCH intent {:#x}: translate {:x?}, want {:x?}",
                va, t, want
            );
            return Err(());
        }
    }
    let mut n = ats_agrees(space, (0..1024).map(|p| va2 + p * 4096))?;
    let around = (0..64).map(|k| gap - 32 * 4096 + k * 4096);
    let spread = (0..64).map(|k| FAKE_GIB_VA + k * (GIB / 64) + 0x1000);
    n += ats_agrees(space, around.chain(spread))?;
    // Reads through the split RAM: every page but the hole reads its own frame.
    for p in 0..1024u64 {
        let va = va2 + p * 4096;
        let got = fault::read32(va as usize);
        if va == hole {
            ensure!(got.is_err(), "read through the unmapped page");
        } else {
            let want = pa.as_u64() + p * 4096;
            if got != Ok(pattern(want)) {
                println!(
                    "    MISMATCH read {:#x}: {:x?}, frame {:#x} holds {:#x}",
                    va,
                    got,
                    want,
                    pattern(want)
                );
                return Err(());
            }
        }
    }
    // SAFETY: if it does not fault it writes our frame.
    match unsafe { fault::write32(ro as usize, 1) } {
        Ok(()) => {
            println!("    write allowed to the read-only page");
            return Err(());
        }
        Err(f) => ensure_eq!(f.class(), FaultClass::Permission, "DFSR {:#x}", f.status),
    }
    println!(
        "oracle-lpae: split blocks: {} ATS checks agree with translate",
        n
    );

    // Tear down.
    ensure!(space.unmap(r2, &mut rec).is_ok(), "unmap 4 MiB");
    ensure!(space.unmap(rg, &mut rec).is_ok(), "unmap GiB");
    flush_all();
    let all = range(0, 1 << 32);
    ensure!(space.free_tables(all, all, &mut rec).is_ok(), "free_tables");
    flush_all();
    rec.free_tables();
    rt::frames::free(pa, 1024);
    ensure_eq!(
        space.table_frames(),
        frames_before,
        "table frames after free_tables"
    );
    Ok(())
}

// ----- the 3G/1G split (T1SZ = 2) ---------------------------------------------------------

/// The first kernel VA of the split: `4 GiB - (4 GiB >> 2)`.
const T1_SPLIT: u64 = 0xc000_0000;
/// The linear map of RAM at `T1_SPLIT` (Linux's `PAGE_OFFSET`).
const LINEAR: u64 = 64 * MIB;

fn t1sz_split_matches_the_walker() -> CaseResult {
    let seed = support::seed(0x7150_5eed, "oracle-t1sz");
    let corrupt = rt::arg("corrupt");
    let mut rng = Rng(seed | 1);
    let guard = SPACE.lock();
    let Some(whole) = guard.as_ref() else {
        return Err(());
    };
    let features = whole.features();
    let (Ok(mut user), Ok(mut kernel)) = (
        Space::new(KernelMemory, Layout::UserLow { t1sz: 2 }, features),
        Space::new(KernelMemory, Layout::KernelHigh { t1sz: 2 }, features),
    ) else {
        println!("    cannot create the split's spaces");
        return Err(());
    };
    // The process part maps what the kernel runs on, as the whole table does, but
    // not-global; the kernel part a linear map of low RAM (2 MiB blocks: its level-2 root
    // holds no 1 GiB block).
    let ng = |a: Attributes| Attributes { global: false, ..a };
    let mut world = World::new();
    let linear = Attributes::KERNEL_DATA;
    let maps = [
        user.map(
            range(RAM_BASE, LOW_RAM),
            PhysAddr::new(RAM_BASE),
            ng(Attributes::KERNEL_IMAGE),
            MapSize::Block1G,
        ),
        user.map(
            range(UART as u64, 4096),
            PhysAddr::new(UART as u64),
            ng(Attributes::DEVICE),
            MapSize::Page4K,
        ),
        kernel.map(
            range(T1_SPLIT, LINEAR),
            PhysAddr::new(RAM_BASE),
            linear,
            MapSize::Block1G,
        ),
    ];
    ensure!(maps.iter().all(Result::is_ok), "kernel maps: {:?}", maps);
    world.push(Intent {
        va: T1_SPLIT,
        len: LINEAR,
        pa: RAM_BASE,
        attrs: linear,
        backed: None,
        readable: false,
    });
    build_random_in(
        &mut user,
        &mut rng,
        &mut world,
        WINDOW,
        true,
        MAX_MAPPINGS / 2,
    );
    build_random_in(
        &mut kernel,
        &mut rng,
        &mut world,
        (T1_SPLIT + LINEAR, (1 << 32) - 2 * MIB),
        false,
        MAX_MAPPINGS - 8,
    );
    ensure_eq!(
        kernel.mappings(range(T1_SPLIT, LINEAR)).count(),
        (LINEAR / (2 * MIB)) as usize,
        "the linear map in 2 MiB blocks of the level-2 root"
    );
    // Each refuses the other part, also on the read side.
    ensure!(
        user.translate_checked(VirtAddr::new(T1_SPLIT as u32))
            .is_err()
            && kernel
                .translate_checked(VirtAddr::new(RAM_BASE as u32))
                .is_err(),
        "a space read outside its part"
    );

    let t1sz = if corrupt == Some("t1sz") { 1 } else { 2 };
    // SAFETY: `user` maps low RAM (code, data, stacks, tables) and the UART identity with
    // the memory types the whole table uses, below the split at 3 GiB (or 2 GiB for the
    // variant); nothing the kernel runs on is above it.
    if let Err(e) = unsafe { arch_lpae::enable_t1sz(t1sz, user.root(), Asid(1), kernel.root()) } {
        println!("    enable_t1sz: {:?}", e);
        return Err(());
    }
    let live = TTBCR.get();
    let result = (|| {
        ensure_eq!(
            (
                live & 7,
                (live >> 16) & 7,
                live & (1 << 7),
                live & (1 << 23)
            ),
            (0, t1sz as u32, 0, 0),
            "TTBCR: T0SZ, T1SZ, EPD0, EPD1"
        );
        // A table built for another split is refused by the activation check.
        // SAFETY: refused before anything is written; were it not, the whole table maps
        // everything the kernel runs on.
        ensure_eq!(
            unsafe { arch_lpae::activate_root(&whole.table_root(), Asid(2)) },
            Err(armv7_mm::error::ActivateError::T1szMismatch {
                table: 0,
                ttbcr: t1sz
            }),
            "a whole-space table under T1SZ = {}",
            t1sz
        );
        // Data through TTBR1: a word of the runtime's RAM written through the linear map
        // reads back through the identity map.
        static mut PROBE: u32 = 0;
        let id = core::ptr::addr_of_mut!(PROBE) as u64;
        if id - RAM_BASE < LINEAR {
            let lin = T1_SPLIT + (id - RAM_BASE);
            // SAFETY: `lin` maps `PROBE`'s frame (or faults, which is reported).
            let w = unsafe { fault::write32(lin as usize, 0x3c1a_0001) };
            ensure!(w.is_ok(), "write through the linear map: {:?}", w);
            ensure_eq!(
                fault::read32(id as usize),
                Ok(0x3c1a_0001),
                "the linear map's write, read through the identity map"
            );
        }
        let oracle = lpae_oracle();
        let mut tally = Tally::new();
        let n = compare_sampled(
            &oracle,
            &mut tally,
            &world,
            &mut rng,
            LOW_RAM,
            |va| {
                if u64::from(va.as_u32()) >= T1_SPLIT {
                    kernel.translate(va)
                } else {
                    user.translate(va)
                }
            },
            |va| kernel_intent(va, LOW_RAM).map(|(pa, a)| (pa, ng(a))),
            None,
            "oracle-t1sz",
        );
        println!(
            "oracle-t1sz: {} VAs over both parts, {} ATS checks, {} mismatches ({} KiB of process tables, {} KiB of kernel tables)",
            n,
            tally.checked,
            tally.mismatches,
            user.table_bytes() / 1024,
            kernel.table_bytes() / 1024
        );
        ensure!(
            tally.mismatches == 0,
            "MISMATCH: the walker disagrees under T1SZ"
        );
        Ok(())
    })();

    // Back on the whole table, then the split's tables go.
    // SAFETY: the whole table maps everything the kernel runs on, as before this case.
    if let Err(e) = unsafe { arch_lpae::enable(0, whole.root(), Asid(1), PhysAddr::new(0)) } {
        println!("    enable back: {:?}", e);
        return Err(());
    }
    flush_all();
    let mut rec = Rec::new();
    let _ = user.destroy(&mut rec);
    let _ = kernel.destroy(&mut rec);
    flush_all();
    rec.free_tables();
    world.free_backed();
    result
}

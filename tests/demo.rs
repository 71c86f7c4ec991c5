//! qemu: cpu=cortex-a15 smp=1 mem=128
//!
//! The demo behind `cargo xtask run`: the MMU on over the crate's own tables (a kernel
//! space in TTBR1, a process in TTBR0 with an ASID), a mapping created, used and removed
//! through an `MmuGather`, with the gather's flush report next to what Linux's ARM32 policy
//! would have issued for the same work. Also booted by `cargo xtask test`, so the demo
//! cannot silently rot: any unexpected result exits non-zero.

#![no_std]
#![no_main]

use armv7_mm::arch::mmu;
use armv7_mm::gather::{InFlight, LinuxArm32Estimate, MmuGather, Scope, Tee};
use armv7_mm::short::{AddressSpace, Attributes, Layout};
use armv7_mm::tlb::{Cp15Tlb, DetectError};
use armv7_mm::{Asid, MapSize, PhysAddr, TlbBackend, VirtAddr, VirtRange};
use rt::frames::{KernelMemory, RAM_BASE};
use rt::println;

rt::entry!(main);

const SPLIT: u8 = 2; // TTBR0 translates [0, 1 GiB), TTBR1 the rest.
const ASID: Asid = Asid(1);
const UART: u32 = 0x0900_0000;
const MIB: u32 = 1 << 20;

static IN_FLIGHT: InFlight = InFlight::new();

fn range(start: u32, len: u64) -> VirtRange {
    VirtRange::from_start_len(VirtAddr::new(start), len).expect("demo ranges are aligned")
}

fn check(ok: bool, what: &str) {
    if !ok {
        println!("  UNEXPECTED: {what}");
        rt::semihosting::exit(1);
    }
}

fn main() -> ! {
    println!("armv7-mm demo");
    // Per-CPU bring-up, before this CPU's caches and MMU are on: broadcast switched on in
    // ACTLR where this state may, and this CPU's errata recorded for the whole system.
    // SAFETY: the MMU and caches are still off, no cache or TLB maintenance has run, and
    // `virt` has no SCU; QEMU's ACTLR ignores the write anyway.
    let joined = unsafe { armv7_mm::arch::cp15::join_coherency() };
    println!("  ACTLR.SMP: {:?}", joined);
    rt::ERRATA.record_this_cpu().expect("errata recorded");
    rt::mmu::enable_identity(rt::ram_size());
    let features = mmu::detect_features();

    // Kernel space: RAM identity-mapped with global supersections.
    let mut kernel = AddressSpace::new(KernelMemory, Layout::Kernel { n: SPLIT }, features)
        .expect("kernel space");
    kernel
        .map(
            range(RAM_BASE as u32, rt::ram_size()),
            PhysAddr::new(RAM_BASE),
            Attributes::KERNEL_IMAGE,
            MapSize::Super16M,
        )
        .expect("map RAM");
    // Process space: the UART (so the console keeps working) and, below, our mappings.
    let mut user =
        AddressSpace::new(KernelMemory, Layout::User { n: SPLIT }, features).expect("user space");
    user.map(
        range(UART, 4096),
        PhysAddr::new(UART as u64),
        Attributes {
            global: false,
            ..Attributes::DEVICE
        },
        MapSize::Page4K,
    )
    .expect("map UART");
    // SAFETY: code, data, stacks and tables stay identity-mapped (TTBR1) with the same memory
    // type as the boot map; the UART stays at its address (TTBR0).
    unsafe {
        mmu::enable_tex_remap();
        mmu::set_split(SPLIT, kernel.root()).expect("TTBCR split");
        mmu::activate(user.root(), ASID).expect("activate");
    }
    // Broadcast only where it is effective; on QEMU the strict check refuses it (ACTLR is
    // RAZ/WI), so the demo then takes the runtime's documented override.
    let mut tlb = match Cp15Tlb::detect(&rt::ERRATA) {
        Ok(tlb) => tlb,
        Err(DetectError::Broadcast(e)) => {
            println!("  strict detection: {e}; QEMU broadcasts anyway: ACTLR not checked");
            rt::detect_tlb()
        }
        Err(e) => panic!("{e}"),
    };
    println!(
        "  MMU on with the crate's tables: kernel in TTBR1 ({} KiB of tables), process in TTBR0 with ASID {}",
        kernel.table_bytes() / 1024,
        ASID.0
    );
    println!("  TLB backend: {:?}", tlb.shareability());

    // Map 4 MiB of 4 KiB pages for the process, backed by fresh frames.
    let base = 0x1000_0000u32;
    let len = 4 * MIB;
    let frames = rt::frames::alloc((len / 4096) as usize, 4096).expect("4 MiB of RAM");
    let region = range(base, len as u64);
    let tables_before = user.table_bytes();
    user.map(region, frames, Attributes::USER_DATA, MapSize::Page4K)
        .expect("map 4 MiB");
    println!(
        "  map   {:#010x}..{:#010x} -> {} as 1024 small pages ({} KiB of L2 tables)",
        base,
        base + len,
        frames,
        (user.table_bytes() - tables_before) / 1024
    );
    for page in 0..len / 4096 {
        let va = base + page * 4096;
        // SAFETY: `va` is mapped to a frame this demo owns.
        let w = unsafe { rt::fault::write32(va as usize, 0xd0d0_0000 | page) };
        check(w.is_ok(), "write through the new mapping");
    }
    let t = user.translate(VirtAddr::new(base + 0x1234));
    let t = t.expect("mapped");
    println!(
        "  translate {:#010x} -> {} ({:?}, {:?}, {:?})",
        base + 0x1234,
        t.pa,
        t.mapping.size,
        t.mapping.attrs.memory,
        t.mapping.attrs.access
    );
    let v = rt::fault::read32((base + 5 * 4096) as usize);
    check(v == Ok(0xd0d0_0005), "read back through the mapping");
    println!(
        "  wrote every page, read back {:#x} from page 5",
        v.unwrap_or(0)
    );

    // Unmap it and free its page tables through a gather, like Linux's unmap_region.
    println!("  unmap it and free its page tables through an MmuGather:");
    let before = tlb.counters();
    let mut linux = LinuxArm32Estimate::new(false);
    // The frames stay the demo's (it frees them below); the gather frees the table frames.
    let mut gather = MmuGather::new(Scope::Asid(ASID), &mut tlb, DemoMemory, &IN_FLIGHT);
    {
        let mut sink = Tee::new(&mut gather, &mut linux);
        user.unmap(region, &mut sink).expect("unmap");
        user.free_tables(region, VirtAddr::new(base), (base + len) as u64, &mut sink)
            .expect("free_tables");
    }
    let report = gather.finish();
    let used = tlb.counters().since(&before);
    println!("    {report}");
    println!(
        "    the backend issued {} TLB invalidates, {} prepare and {} completion barrier(s); \
         Linux's ARM32 policy would issue {} TLBIMVA for the same work",
        used.invalidates(),
        used.prepares,
        used.completions,
        linux.finish()
    );
    check(used.completions == 1, "one completion barrier per flush");
    match rt::fault::read32((base + 5 * 4096) as usize) {
        Ok(v) => check(
            false,
            if v == 0 {
                "read after unmap"
            } else {
                "stale read after unmap"
            },
        ),
        Err(f) => println!(
            "  a read at the old address now faults: {:?} fault at {:#010x}",
            f.class(),
            f.address
        ),
    }
    check(
        user.table_bytes() == 4096 + 4096,
        "tables back to the L1 + UART frame",
    );
    rt::frames::free(frames, (len / 4096) as usize);

    // Sparse: 8 pages scattered over 64 MiB, unmapped as one 64 MiB range.
    let window = range(base, 64 * MIB as u64);
    let page = rt::frames::alloc(1, 4096).expect("a frame");
    for i in 0..8u32 {
        let va = base + i * 8 * MIB + i * 4096 * 3;
        user.map(
            range(va, 4096),
            page,
            Attributes::USER_DATA,
            MapSize::Page4K,
        )
        .expect("map a scattered page");
    }
    let before = tlb.counters();
    let mut linux = LinuxArm32Estimate::new(false);
    let mut gather = MmuGather::new(Scope::Asid(ASID), &mut tlb, DemoMemory, &IN_FLIGHT);
    user.unmap(window, &mut Tee::new(&mut gather, &mut linux))
        .expect("unmap the window");
    user.free_tables(window, VirtAddr::new(base), window.end(), &mut gather)
        .expect("free_tables");
    let report = gather.finish();
    let used = tlb.counters().since(&before);
    let by_va = used.va + used.va_all_asids;
    println!(
        "  8 pages scattered over 64 MiB, unmapped as one range: {} invalidates ({} by VA), \
         Linux's ARM32 policy: {}",
        used.invalidates(),
        by_va,
        linux.finish()
    );
    check(
        report.fallback.is_none() && used.asid + used.all == 0 && by_va == 8,
        "a precise range flush",
    );
    check(
        user.table_bytes() == tables_before,
        "table memory back to what it was",
    );
    rt::frames::free(page, 1);
    println!("demo done");
    rt::semihosting::exit(0)
}

/// The demo's view of memory for the gather: table frames go back to the allocator; the
/// mapped frames belong to the demo, which frees them as one block after the unmap.
#[derive(Clone, Copy)]
struct DemoMemory;

// SAFETY: allocation and `phys_to_virt` are the runtime's allocator (see `KernelMemory`).
unsafe impl armv7_mm::Memory for DemoMemory {
    fn allocate_frames(&mut self, count: usize, align: usize) -> Option<PhysAddr> {
        KernelMemory.allocate_frames(count, align)
    }
    fn free_frames(&mut self, pa: PhysAddr, count: usize) {
        KernelMemory.free_frames(pa, count)
    }
    fn phys_to_virt(&self, pa: PhysAddr) -> core::ptr::NonNull<u8> {
        KernelMemory.phys_to_virt(pa)
    }
    fn release_mapped(&mut self, _va: VirtAddr, _pa: PhysAddr, _bytes: usize) {}
}

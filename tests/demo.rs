//! qemu: cpu=cortex-a15,cortex-a7 smp=1 mem=128
//! variant: lpae arg=lpae expect=pass
//! variant: wrong_split arg=wrong-split expect=fail "SplitMismatch { table: 1, ttbcr: 2 }"
//!
//! The demo behind `cargo xtask run`: from reset (MMU off) the crate brings the MMU up over
//! its own tables (a kernel space in TTBR1, `AddressSpace::bring_up`), activates a process
//! in TTBR0 with an ASID (`AddressSpace::activate`, checked against TTBCR.N), and a mapping
//! is created, used and removed through an `MmuGather`, with the gather's flush report next
//! to what Linux's ARM32 policy would have issued for the same work. Short descriptors by
//! default; `lpae` runs the same kernel over long descriptors. Also booted by `cargo xtask
//! test`, so the demo cannot silently rot: any unexpected result exits non-zero.
//!
//! Variants: `lpae` (the same demo in the other format); `wrong_split` builds the process
//! space for another split than the kernel's, and the activation must refuse it by name.

#![no_std]
#![no_main]

use armv7_mm::arch::cp15::{DACR, SCTLR, SCTLR_BITS, TTBCR};
use armv7_mm::arch::root::{RootFormat, RootLayout, TableRoot};
use armv7_mm::arch::root::{
    DACR_DOMAIN0_CLIENT, SCTLR_AFE, SCTLR_C, SCTLR_I, SCTLR_M, SCTLR_TRE, SCTLR_Z,
};
use armv7_mm::arch::{lpae as arch_lpae, mmu};
use armv7_mm::asid::{AsidAllocator, AsidContext, SwitchError};
use armv7_mm::error::ActivateError;
use armv7_mm::gather::{InFlight, LinuxArm32Estimate, MmuGather, Scope, Tee};
use armv7_mm::lpae::Lpae;
use armv7_mm::short::{Attributes, Layout, Short};
use armv7_mm::table::{AddressSpace, Format};
use armv7_mm::tlb::{Cp15Tlb, DetectError};
use armv7_mm::{Asid, MapSize, PhysAddr, TlbBackend, VirtAddr, VirtRange};
use rt::frames::{KernelMemory, RAM_BASE};
use rt::println;
use tock_registers::interfaces::{ReadWriteable, Readable};

rt::entry!(main);

const SPLIT: u8 = 2; // TTBR0 translates [0, 1 GiB), TTBR1 the rest.
const ASID: Asid = Asid(1);
const UART: u32 = 0x0900_0000;
const MIB: u32 = 1 << 20;

static IN_FLIGHT: InFlight = InFlight::new();
static ALLOC: AsidAllocator<1> = AsidAllocator::new();

fn range(start: u32, len: u64) -> VirtRange {
    VirtRange::from_start_len(VirtAddr::new(start), len).expect("demo ranges are aligned")
}

fn check(ok: bool, what: &str) {
    if !ok {
        println!("  UNEXPECTED: {what}");
        rt::semihosting::exit(1);
    }
}

/// What differs between the formats in this demo: the crate's bring-up and activation
/// (inherent methods of each format's address space) and the block size for RAM.
trait DemoFormat: Format {
    const NAME: &'static str;
    /// Long descriptors (`TTBCR.EAE = 1`).
    const LPAE: bool;
    const FORMAT: RootFormat;
    /// The largest block the kernel's RAM map uses.
    const RAM_BLOCK: MapSize;
    fn features() -> Self::Features;
    /// # Safety
    /// As `AddressSpace::bring_up`.
    unsafe fn bring_up(kernel: &AddressSpace<Self, KernelMemory>) -> Result<(), ActivateError>;
    /// # Safety
    /// As `AddressSpace::activate`.
    unsafe fn activate(
        user: &AddressSpace<Self, KernelMemory>,
        asid: Asid,
    ) -> Result<(), ActivateError>;
}

impl DemoFormat for Short {
    const NAME: &'static str = "short descriptors";
    const LPAE: bool = false;
    const FORMAT: RootFormat = RootFormat::Short;
    const RAM_BLOCK: MapSize = MapSize::Super16M;
    fn features() -> Self::Features {
        mmu::detect_features()
    }
    unsafe fn bring_up(kernel: &AddressSpace<Self, KernelMemory>) -> Result<(), ActivateError> {
        // SAFETY: the caller's contract.
        unsafe { kernel.bring_up() }
    }
    unsafe fn activate(
        user: &AddressSpace<Self, KernelMemory>,
        asid: Asid,
    ) -> Result<(), ActivateError> {
        // SAFETY: the caller's contract.
        unsafe { user.activate(asid) }
    }
}

impl DemoFormat for Lpae {
    const NAME: &'static str = "long descriptors (LPAE)";
    const LPAE: bool = true;
    const FORMAT: RootFormat = RootFormat::Lpae;
    const RAM_BLOCK: MapSize = MapSize::Block2M;
    fn features() -> Self::Features {
        arch_lpae::detect_features().expect("the demo's LPAE run needs an LPAE CPU")
    }
    unsafe fn bring_up(kernel: &AddressSpace<Self, KernelMemory>) -> Result<(), ActivateError> {
        // SAFETY: the caller's contract.
        unsafe { kernel.bring_up() }
    }
    unsafe fn activate(
        user: &AddressSpace<Self, KernelMemory>,
        asid: Asid,
    ) -> Result<(), ActivateError> {
        // SAFETY: the caller's contract.
        unsafe { user.activate(asid) }
    }
}

fn main() -> ! {
    if rt::flag("lpae") {
        demo::<Lpae>()
    } else {
        demo::<Short>()
    }
}

/// The console lives below the split, in the process space: if the activation is refused
/// the MMU goes off again (everything is identity-mapped) so that the error can be shown.
fn refused(e: ActivateError) -> ! {
    SCTLR.modify(SCTLR_BITS::M::Disable);
    armv7_mm::arch::barrier::isb();
    println!("  activation refused: {e:?} ({e})");
    rt::semihosting::exit(1)
}

fn demo<F: DemoFormat>() -> ! {
    println!("armv7-mm demo, {}", F::NAME);
    // Per-CPU bring-up, before this CPU's caches and MMU are on: broadcast switched on in
    // ACTLR where this state may, and this CPU's errata recorded for the whole system.
    // SAFETY: the MMU and caches are still off, no cache or TLB maintenance has run, and
    // `virt` has no SCU; QEMU's ACTLR ignores the write anyway.
    let joined = unsafe { armv7_mm::arch::cp15::join_coherency() };
    println!("  ACTLR.SMP: {:?}", joined);
    rt::ERRATA.record_this_cpu().expect("errata recorded");
    let features = F::features();

    // Kernel space: RAM identity-mapped with global blocks, for TTBR1.
    let mut kernel = AddressSpace::<F, _>::new(KernelMemory, Layout::Kernel { n: SPLIT }, features)
        .expect("kernel space");
    kernel
        .map(
            range(RAM_BASE as u32, rt::ram_size()),
            PhysAddr::new(RAM_BASE),
            Attributes::KERNEL_IMAGE,
            F::RAM_BLOCK,
        )
        .expect("map RAM");
    // Process space: the UART (so the console keeps working) and, below, our mappings.
    let user_split = if rt::flag("wrong-split") {
        SPLIT - 1
    } else {
        SPLIT
    };
    let mut user =
        AddressSpace::<F, _>::new(KernelMemory, Layout::User { n: user_split }, features)
            .expect("user space");
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
    // SAFETY: the MMU is off (reset state, QEMU has no caches to invalidate); the kernel
    // space maps all of RAM identity (code, stack, data, tables, at or above the split) as
    // executable write-back memory; the UART below the split comes back with the process.
    if let Err(e) = unsafe { F::bring_up(&kernel) } {
        println!("  bring-up refused: {e:?} ({e})");
        rt::semihosting::exit(1);
    }
    // SAFETY: as above; the process space maps the UART at its address, and ASID 1 has
    // never been used on this CPU.
    if let Err(e) = unsafe { F::activate(&user, ASID) } {
        refused(e);
    }
    // What the bring-up left: MMU, caches, branch prediction and TEX remap on, AFE off,
    // domain 0 client, the kernel's split in TTBCR (format by EAE), no TTBR0 parking left.
    let sctlr = SCTLR.get();
    let on = SCTLR_M | SCTLR_C | SCTLR_I | SCTLR_Z | SCTLR_TRE;
    check(
        sctlr & on == on && sctlr & SCTLR_AFE == 0,
        "SCTLR after the bring-up",
    );
    check(DACR.get() == DACR_DOMAIN0_CLIENT, "DACR: domain 0 client");
    let ttbcr = TTBCR.get();
    let parked = if F::LPAE { 1 << 7 } else { 1 << 4 };
    check(
        ttbcr & 7 == u32::from(SPLIT) && (ttbcr >> 31 == 1) == F::LPAE && ttbcr & parked == 0,
        "TTBCR: the split, the format, TTBR0 un-parked",
    );
    // The ASID allocator's switch checks the same way, before it hands out an ASID: a root
    // of another split, or the kernel's own, is refused and nothing changes.
    let ctx = AsidContext::new();
    let other = TableRoot::new(user.root(), F::FORMAT, RootLayout::User { n: SPLIT + 1 });
    // SAFETY: refused before anything is written (checked below).
    let r = unsafe { ALLOC.activate(0, &ctx, &other) };
    check(
        r == Err(SwitchError::Activate(ActivateError::SplitMismatch {
            table: SPLIT + 1,
            ttbcr: SPLIT,
        })),
        "the allocator refuses a table of another split",
    );
    let kernel_root = TableRoot::new(kernel.root(), F::FORMAT, RootLayout::Kernel { n: SPLIT });
    // SAFETY: as above.
    let r = unsafe { ALLOC.activate(0, &ctx, &kernel_root) };
    check(
        r == Err(SwitchError::Activate(ActivateError::WrongHalf)),
        "the allocator refuses the kernel's table",
    );
    check(ctx.asid().is_none(), "no ASID spent on a refused switch");
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
        "  MMU brought up by the crate: kernel in TTBR1 ({} KiB of tables), process in TTBR0 with ASID {}",
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
    let uart_tables = tables_before;
    user.map(region, frames, Attributes::USER_DATA, MapSize::Page4K)
        .expect("map 4 MiB");
    println!(
        "  map   {:#010x}..{:#010x} -> {} as 1024 small pages ({} KiB of page tables)",
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
        user.free_tables(region, region, &mut sink)
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
        user.table_bytes() == uart_tables,
        "tables back to the root and the UART's",
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
    user.free_tables(window, window, &mut gather)
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

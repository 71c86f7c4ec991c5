//! qemu: cpu=cortex-a15,cortex-a7 smp=1 mem=128
//! variant: leak arg=leak expect=fail "frames not back"
//!
//! The README's "Use it in your kernel" sketch, as a kernel that boots. Everything between
//! `README-BEGIN` and `README-END` is the sketch, character for character (`cargo xtask
//! test` compares the two, so they cannot drift); what surrounds it is this kernel's own
//! code: the frame allocator wrapper, the linear map, and the checks the sketch calls.
//! The test runtime gives only reset, the console, semihosting, fault probes and frames:
//! the MMU is brought up by the crate.
//!
//! Checks: the process's heap is readable from PL0 (`ldrt`) through ASID 1 and writable by
//! the kernel before `mprotect`; after it, the same write takes a permission fault while a
//! PL0 read still sees the data; after `munmap`, a PL0 read takes a translation fault;
//! after the exit (`destroy` through a gather), every frame the process used came back
//! exactly once (a double free panics in the allocator; a leak fails the count).
//!
//! Teeth: `leak` drops one frame the crate hands back, and the count must catch it.

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicUsize, Ordering};

use armv7_mm::arch::cp15::{SCTLR, SCTLR_BITS};
use rt::fault::FaultClass;
use rt::println;
use tock_registers::interfaces::ReadWriteable;

rt::entry!(main);

/// This kernel starts no other CPU.
const CPUS: usize = 1;
/// Frames out of the allocator through this kernel (the crate's and the heap's).
static OUT: AtomicUsize = AtomicUsize::new(0);
static FREES: AtomicUsize = AtomicUsize::new(0);

fn main() -> ! {
    verdict(kernel_main())
}

fn frame_alloc(count: usize, align: usize) -> Option<PhysAddr> {
    let pa = rt::frames::alloc(count, align)?;
    OUT.fetch_add(count, Ordering::SeqCst);
    Some(pa)
}

fn frame_free(pa: PhysAddr, count: usize) {
    if FREES.fetch_add(1, Ordering::SeqCst) == 0 && rt::flag("leak") {
        return; // the bug: the first frame handed back is lost
    }
    OUT.fetch_sub(count, Ordering::SeqCst);
    rt::frames::free(pa, count);
}

fn linear_map(pa: PhysAddr) -> core::ptr::NonNull<u8> {
    core::ptr::NonNull::new(pa.as_u64() as usize as *mut u8).expect("RAM is not at 0")
}

/// MMU off (everything is identity-mapped; the console is not, once TTBR0 is parked),
/// then the result.
fn verdict<E: core::fmt::Display>(r: Result<(), E>) -> ! {
    SCTLR.modify(SCTLR_BITS::M::Disable);
    armv7_mm::arch::barrier::isb();
    match r {
        Ok(()) => println!("readme kernel: ok"),
        Err(e) => {
            println!("readme kernel: FAILED: {e}");
            rt::semihosting::exit(1)
        }
    }
    rt::semihosting::exit(0)
}

fn fail(what: &'static str) -> ! {
    verdict(Err(what))
}

/// The process runs: the kernel fills its heap, the process reads it at PL0 (`ldrt`).
fn process_runs(heap: VirtRange) {
    if mmu::current_asid() != Asid(1) {
        fail("the process does not run with ASID 1");
    }
    for (i, page) in heap.iter_pages().enumerate() {
        let va = page.start().as_u32() as usize;
        // SAFETY: the heap is this kernel's frames, mapped only there.
        if unsafe { rt::fault::write32(va, 0x600d_0000 + i as u32) }.is_err() {
            fail("kernel write to the heap before mprotect");
        }
        if rt::fault::read32_user(va) != Ok(0x600d_0000 + i as u32) {
            fail("PL0 read of the heap through ASID 1");
        }
    }
}

fn expect_write_fault(heap: VirtRange) {
    for (i, page) in heap.iter_pages().enumerate() {
        let va = page.start().as_u32() as usize;
        // SAFETY: as in `process_runs`; the write must fault and change nothing.
        match unsafe { rt::fault::write32(va, 0xbad) } {
            Err(f) if f.class() == FaultClass::Permission => {}
            _ => fail("write after mprotect did not take a permission fault"),
        }
        if rt::fault::read32_user(va) != Ok(0x600d_0000 + i as u32) {
            fail("PL0 read after mprotect");
        }
    }
}

fn expect_read_fault(heap: VirtRange) {
    for page in heap.iter_pages() {
        match rt::fault::read32_user(page.start().as_u32() as usize) {
            Err(f) if f.class() == FaultClass::Translation => {}
            _ => fail("read after munmap did not take a translation fault"),
        }
    }
}

fn expect_frames_back<M: Memory>(kernel: &AddressSpace<M>) {
    if OUT.load(Ordering::SeqCst) as u64 != kernel.table_bytes() / 4096 {
        fail("frames not back: more out than the kernel's own tables");
    }
}

// README-BEGIN
use armv7_mm::arch::cp15::join_coherency;
use armv7_mm::arch::mmu;
use armv7_mm::error::MapError;
use armv7_mm::gather::{InFlight, MmuGather, Scope};
use armv7_mm::short::{Access, AddressSpace, Attributes, Execute, Layout};
use armv7_mm::tlb::{Cp15Tlb, DetectError, Shareability, SystemErrata};
use armv7_mm::{Asid, MapSize, Memory, PhysAddr, VirtAddr, VirtRange};

/// Your allocator and your physical-to-virtual mapping, as the crate sees them.
#[derive(Clone, Copy)]
struct KernelMemory;
// SAFETY: `frame_alloc` hands out RAM nothing else uses until `frame_free`, and
// `linear_map` reaches it through a normal write-back mapping (here VA = PA).
unsafe impl Memory for KernelMemory {
    fn allocate_frames(&mut self, count: usize, align: usize) -> Option<PhysAddr> {
        frame_alloc(count, align)
    }
    fn free_frames(&mut self, pa: PhysAddr, count: usize) {
        frame_free(pa, count)
    }
    fn phys_to_virt(&self, pa: PhysAddr) -> core::ptr::NonNull<u8> {
        linear_map(pa)
    }
    /// Unmapped and flushed from every TLB: RAM goes back, device pages were never ours.
    fn release_mapped(&mut self, _va: VirtAddr, pa: PhysAddr, bytes: usize) {
        if pa >= RAM_PA {
            frame_free(pa, bytes / 4096)
        }
    }
}

/// Every CPU's errata, merged (big.LITTLE: an A7 boot CPU must not hide the A15s' 798181).
/// With Cortex-A15s before r4p0, pass the hook that IPIs them (the full 798181 workaround).
static ERRATA: SystemErrata = SystemErrata::new(None);
static IN_FLIGHT: InFlight = InFlight::new(); // one per address space

/// RAM (128 MiB at 1 GiB), a process's 64 KiB heap, and the console (below the split on
/// QEMU `virt`, so every process maps it for the kernel). Checked when compiled.
const RAM: VirtRange = VirtRange::pages::<0x4000_0000, 32768>();
const RAM_PA: PhysAddr = PhysAddr::new(0x4000_0000);
const HEAP: VirtRange = VirtRange::pages::<0x1000_0000, 16>();
const UART: VirtRange = VirtRange::pages::<0x0900_0000, 1>();

fn kernel_main() -> Result<(), armv7_mm::Error> {
    // On EVERY CPU, early (before its caches and MMU are on; A9: after the SCU is on):
    // ACTLR.SMP (+FW on A5/A9). Where they do not stick (Secure-only ACTLR, QEMU) the
    // result says so, and `Cp15Tlb::detect` below refuses broadcast with the reason.
    // SAFETY: this CPU's MMU and caches are still off.
    let _joined = unsafe { join_coherency() };
    ERRATA.record_this_cpu()?; // before it runs a shared space

    let features = mmu::detect_features();
    // From reset, MMU off: the kernel's half of a 1 GiB / 3 GiB split, RAM identity-mapped.
    let mut kernel = AddressSpace::new(KernelMemory, Layout::Kernel { n: 2 }, features)?;
    kernel.map(RAM, RAM_PA, Attributes::KERNEL_IMAGE, MapSize::Super16M)?;
    // A process: its heap in fresh frames, and the console (kernel-only, not global).
    let mut user = AddressSpace::new(KernelMemory, Layout::User { n: 2 }, features)?;
    let heap = frame_alloc(16, 4096).ok_or(MapError::OutOfMemory)?;
    user.map(HEAP, heap, Attributes::USER_DATA, MapSize::Page4K)?;
    let console = Attributes {
        global: false,
        ..Attributes::DEVICE
    };
    user.map(UART, PhysAddr::new(0x0900_0000), console, MapSize::Page4K)?;
    // SAFETY: `kernel` maps this code, its stack and data identity (VA = PA); see
    // `arch::mmu::bring_up`. It programs TTBCR, TTBR1 (TTBR0 parked), DACR, PRRR/NMRR,
    // invalidates TLB, branch predictor and I-cache, then SCTLR.M, C, I, Z, TRE (AFE = 0).
    unsafe { kernel.bring_up()? };
    // Checked against TTBCR.N and the format: a table built for another split is refused
    // with ActivateError::SplitMismatch { table, ttbcr } instead of being walked.
    // SAFETY: ASID 1 is fresh; what the kernel runs on is above the split.
    unsafe { user.activate(Asid(1))? }; // TTBR0 parked, ASID, TTBR0 = root

    let mut tlb = match Cp15Tlb::detect(&ERRATA) {
        Ok(tlb) => tlb, // broadcast if effective, local on UP
        // A kernel that runs one CPU needs no broadcast. SMP without effective broadcast:
        // the IPI shootdown backend (`tlb::ipi`).
        Err(DetectError::Broadcast(_)) if CPUS == 1 => {
            Cp15Tlb::forced(Shareability::Local, &ERRATA)?
        }
        Err(e) => return Err(e.into()), // e.g. 798181 needs the IPI hook
    };
    process_runs(HEAP); // your scheduler: the process reads its heap (PL0, ASID 1)

    // mprotect: permission changes are invalidated by the gather like an unmap.
    let mut gather = MmuGather::new(Scope::Asid(Asid(1)), &mut tlb, KernelMemory, &IN_FLIGHT);
    user.protect(HEAP, Access::UserRo, Execute::Never, &mut gather)?;
    gather.finish();
    expect_write_fault(HEAP);

    // munmap: clear the entries, free the emptied tables, invalidate once, then free.
    let mut gather = MmuGather::new(Scope::Asid(Asid(1)), &mut tlb, KernelMemory, &IN_FLIGHT);
    user.unmap(HEAP, &mut gather)?;
    user.free_tables(HEAP, VirtRange::ALL, &mut gather)?; // no neighbours to keep
    let _report = gather.finish(); // prepare, invalidates, complete, then the frames go back
    expect_read_fault(HEAP);

    // exit: off every CPU that ran it, then the whole space through one gather.
    // SAFETY: nothing this kernel runs on lies below the split (the console does not print
    // again until the MMU is off).
    unsafe { mmu::park()? };
    let mut gather = MmuGather::new(Scope::Asid(Asid(1)), &mut tlb, KernelMemory, &IN_FLIGHT);
    user.destroy(&mut gather);
    gather.finish();
    expect_frames_back(&kernel); // the heap and every user table came back, once
    Ok(())
}
// README-END

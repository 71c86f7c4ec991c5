//! A minimal GICv2 driver for software-generated interrupts (SGIs) between CPUs, and the
//! IRQ handler the vector table enters.
//!
//! QEMU `virt` has a GICv2 with the distributor at PA `0x0800_0000` and the CPU
//! interface at `0x0801_0000`; it models no security extensions, so every interrupt is in
//! group 0 and signalled as IRQ. The tests map both below a kernel VA of their choice and
//! give it here ([`init`]). Per CPU, [`init_cpu`] enables the SGIs, unmasks every priority
//! and enables the CPU interface; [`enable_irqs`] clears `CPSR.I`.
//!
//! The IRQ entry (`rt_exc_irq` in [`crate::start`]) saves the interrupted context on the
//! SVC stack and calls [`rt_irq`], which acknowledges (`GICC_IAR`), runs the handler set
//! with [`set_handler`] and ends the interrupt (`GICC_EOIR`). An IRQ without a handler is
//! fatal, as before this driver existed.

use core::sync::atomic::{AtomicUsize, Ordering};

use armv7_mm::arch::barrier::dsb_ish;

/// Physical address of the `virt` GICv2 distributor.
pub const VIRT_GICD_PA: u64 = 0x0800_0000;
/// Physical address of the `virt` GICv2 CPU interface.
pub const VIRT_GICC_PA: u64 = 0x0801_0000;

const GICD_CTLR: usize = 0x000;
const GICD_ISENABLER0: usize = 0x100;
const GICD_IPRIORITYR: usize = 0x400;
const GICD_SGIR: usize = 0xf00;
const GICC_CTLR: usize = 0x000;
const GICC_PMR: usize = 0x004;
const GICC_IAR: usize = 0x00c;
const GICC_EOIR: usize = 0x010;
/// `GICC_IAR` value of a spurious interrupt.
const SPURIOUS: u32 = 1023;

static GICD: AtomicUsize = AtomicUsize::new(0);
static GICC: AtomicUsize = AtomicUsize::new(0);
static HANDLER: AtomicUsize = AtomicUsize::new(0);

fn write(base: &AtomicUsize, offset: usize, value: u32) {
    let addr = base.load(Ordering::SeqCst) + offset;
    assert!(addr > offset, "GIC used before rt::gic::init");
    // SAFETY: `init` was given VAs that map the GIC's registers as device memory; this is
    // one aligned 32-bit register write.
    unsafe { (addr as *mut u32).write_volatile(value) };
}

fn read(base: &AtomicUsize, offset: usize) -> u32 {
    let addr = base.load(Ordering::SeqCst) + offset;
    assert!(addr > offset, "GIC used before rt::gic::init");
    // SAFETY: as in `write`, a register read.
    unsafe { (addr as *const u32).read_volatile() }
}

/// Records where the distributor and the CPU interface are mapped, and enables the
/// distributor (once, on one CPU, before any [`init_cpu`]).
///
/// # Safety
/// `gicd` and `gicc` are VAs mapping the GIC's distributor and CPU interface (4 KiB
/// each) as device memory on every CPU that uses this module, for as long as it does.
pub unsafe fn init(gicd: usize, gicc: usize) {
    GICD.store(gicd, Ordering::SeqCst);
    GICC.store(gicc, Ordering::SeqCst);
    write(&GICD, GICD_CTLR, 1);
}

/// This CPU's part: SGIs 0-15 enabled at priority 0x80, every priority unmasked, CPU
/// interface enabled. `CPSR.I` stays as it is (see [`enable_irqs`]).
pub fn init_cpu() {
    write(&GICD, GICD_ISENABLER0, 0xffff);
    for i in 0..4 {
        write(&GICD, GICD_IPRIORITYR + 4 * i, 0x8080_8080);
    }
    write(&GICC, GICC_PMR, 0xf0);
    write(&GICC, GICC_CTLR, 1);
}

/// Sets what an SGI runs: `handler(sgi, from_cpu)`, on the CPU it interrupted, with IRQs
/// masked. It must not take locks that interrupted code may hold.
pub fn set_handler(handler: fn(u32, usize)) {
    HANDLER.store(handler as usize, Ordering::SeqCst);
}

/// Sends SGI `sgi` (0-15) to the CPUs in `targets` (bit n = CPU n). Every memory write
/// before the call is visible to the targets' handlers (`dsb ish` before the register
/// write).
pub fn send_sgi(targets: u32, sgi: u32) {
    dsb_ish();
    write(&GICD, GICD_SGIR, ((targets & 0xff) << 16) | (sgi & 0xf));
}

/// Unmasks IRQs on this CPU.
pub fn enable_irqs() {
    // SAFETY: clearing CPSR.I lets the IRQ vector run, which saves and restores every
    // register it uses (`rt_exc_irq`).
    unsafe { core::arch::asm!("cpsie i", options(nomem, nostack)) };
}

/// Masks IRQs on this CPU.
pub fn disable_irqs() {
    // SAFETY: setting CPSR.I only masks interrupts.
    unsafe { core::arch::asm!("cpsid i", options(nomem, nostack)) };
}

/// Sleeps until an interrupt is pending at this CPU (`wfi`; it wakes with IRQs masked too,
/// and then [`take_pending`] clears what woke it).
pub fn wait_for_interrupt() {
    // SAFETY: `wfi` only waits; it returns at once if an interrupt is already pending.
    unsafe { core::arch::asm!("dsb sy", "wfi", options(nomem, nostack)) };
}

/// With IRQs masked: acknowledges and ends the highest-priority pending interrupt without
/// running the handler; returns (id, requesting CPU) or `None` if nothing was pending.
pub fn take_pending() -> Option<(u32, usize)> {
    let iar = read(&GICC, GICC_IAR);
    let id = iar & 0x3ff;
    if id == SPURIOUS {
        return None;
    }
    write(&GICC, GICC_EOIR, iar);
    Some((id, ((iar >> 10) & 7) as usize))
}

/// The IRQ handler (called by `rt_exc_irq` in SVC mode with IRQs masked).
#[no_mangle]
pub extern "C" fn rt_irq() {
    let iar = read(&GICC, GICC_IAR);
    let id = iar & 0x3ff;
    if id == SPURIOUS {
        return;
    }
    let h = HANDLER.load(Ordering::SeqCst);
    if h == 0 {
        crate::console::_print_unlocked(format_args!(
            "\nunexpected IRQ {id} on cpu {}\n",
            crate::cpu_id()
        ));
        crate::fail_now();
    }
    // SAFETY: `set_handler` stored a `fn(u32, usize)`.
    let f: fn(u32, usize) = unsafe { core::mem::transmute::<usize, fn(u32, usize)>(h) };
    f(id, ((iar >> 10) & 7) as usize);
    write(&GICC, GICC_EOIR, iar);
}

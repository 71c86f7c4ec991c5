//! Abort handling: record DFSR/DFAR (data) or IFSR/IFAR (prefetch), let a test *expect* a
//! fault through a probe, and fail the test on any fault nobody expected.

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use armv7_mm::arch::cp15::{DFAR, DFSR, IFAR, IFSR};
use tock_registers::interfaces::Readable;

use crate::start::MAX_CPUS;

/// Which kind of abort was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbortKind {
    /// Data abort (load/store): DFSR/DFAR.
    Data,
    /// Prefetch abort (instruction fetch): IFSR/IFAR.
    Prefetch,
}

/// Decoded fault status (short-descriptor and long-descriptor formats).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultClass {
    /// No valid translation.
    Translation,
    /// Access flag fault.
    AccessFlag,
    /// Permission fault.
    Permission,
    /// Domain fault (short descriptors).
    Domain,
    /// Anything else (external abort, alignment, ...).
    Other,
}

/// A recorded abort.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Data or prefetch.
    pub kind: AbortKind,
    /// DFSR or IFSR.
    pub status: u32,
    /// DFAR or IFAR.
    pub address: u32,
    /// Address of the faulting instruction.
    pub pc: u32,
}

impl Fault {
    /// Classifies the fault status register value.
    pub fn class(&self) -> FaultClass {
        classify(self.status)
    }
}

/// Classifies a DFSR/IFSR value in either descriptor format.
pub fn classify(status: u32) -> FaultClass {
    if status & (1 << 9) != 0 {
        // Long-descriptor format: STATUS[5:0].
        match (status & 0x3f) >> 2 {
            0b0001 => FaultClass::Translation,
            0b0010 => FaultClass::AccessFlag,
            0b0011 => FaultClass::Permission,
            _ => FaultClass::Other,
        }
    } else {
        let fs = (status & 0xf) | ((status >> 6) & 0x10);
        match fs {
            0b00101 | 0b00111 => FaultClass::Translation,
            0b00011 | 0b00110 => FaultClass::AccessFlag,
            0b01101 | 0b01111 => FaultClass::Permission,
            0b01001 | 0b01011 => FaultClass::Domain,
            _ => FaultClass::Other,
        }
    }
}

struct Slot {
    armed: AtomicBool,
    taken: AtomicBool,
    kind: AtomicU32,
    status: AtomicU32,
    address: AtomicU32,
    pc: AtomicU32,
}

#[allow(clippy::declare_interior_mutable_const)]
const SLOT: Slot = Slot {
    armed: AtomicBool::new(false),
    taken: AtomicBool::new(false),
    kind: AtomicU32::new(0),
    status: AtomicU32::new(0),
    address: AtomicU32::new(0),
    pc: AtomicU32::new(0),
};
static SLOTS: [Slot; MAX_CPUS] = [SLOT; MAX_CPUS];

fn slot() -> &'static Slot {
    &SLOTS[crate::cpu_id()]
}

fn arm() {
    let s = slot();
    s.taken.store(false, Ordering::SeqCst);
    s.armed.store(true, Ordering::SeqCst);
}

fn disarm() -> Option<Fault> {
    let s = slot();
    s.armed.store(false, Ordering::SeqCst);
    if !s.taken.load(Ordering::SeqCst) {
        return None;
    }
    Some(Fault {
        kind: if s.kind.load(Ordering::SeqCst) == 0 {
            AbortKind::Data
        } else {
            AbortKind::Prefetch
        },
        status: s.status.load(Ordering::SeqCst),
        address: s.address.load(Ordering::SeqCst),
        pc: s.pc.load(Ordering::SeqCst),
    })
}

/// Reads the word at `addr` with a privileged load; a fault is returned, not fatal.
pub fn read32(addr: usize) -> Result<u32, Fault> {
    let value: u32;
    arm();
    // SAFETY: the load may fault; the armed data-abort handler then records the fault and
    // resumes at the next instruction with `value` still 0. No memory is written.
    unsafe {
        core::arch::asm!("mov {v}, #0", "ldr {v}, [{a}]", v = out(reg) value, a = in(reg) addr,
            options(nostack, preserves_flags));
    }
    disarm().map_or(Ok(value), Err)
}

/// Reads the word at `addr` with an unprivileged load (`ldrt`, as user mode would).
pub fn read32_user(addr: usize) -> Result<u32, Fault> {
    let value: u32;
    arm();
    // SAFETY: as in `read32`; `ldrt` only checks the access as PL0 would.
    unsafe {
        core::arch::asm!("mov {v}, #0", "ldrt {v}, [{a}]", v = out(reg) value, a = in(reg) addr,
            options(nostack, preserves_flags));
    }
    disarm().map_or(Ok(value), Err)
}

/// Writes `value` to `addr` with a privileged store; a fault is returned, not fatal.
///
/// # Safety
/// If the store does not fault, it writes memory: `addr` must be memory the test owns.
pub unsafe fn write32(addr: usize, value: u32) -> Result<(), Fault> {
    arm();
    // SAFETY: the caller owns `addr` if it is mapped; a fault is recorded and skipped.
    unsafe {
        core::arch::asm!("str {v}, [{a}]", v = in(reg) value, a = in(reg) addr,
            options(nostack, preserves_flags));
    }
    disarm().map_or(Ok(()), Err)
}

/// Calls the code at `addr` (which must return with `bx lr` if it runs); an instruction
/// fetch fault is returned, not fatal.
///
/// # Safety
/// If `addr` is executable, the code there runs: it must be a function that follows the
/// AAPCS and clobbers at most `r0-r3`, `r12`.
pub unsafe fn call(addr: usize) -> Result<(), Fault> {
    arm();
    // SAFETY: the caller vouches for the code at `addr`; a prefetch abort resumes at the
    // return address of the `blx`.
    unsafe {
        core::arch::asm!("blx {a}", a = in(reg) addr, out("r0") _, out("r1") _, out("r2") _,
            out("r3") _, out("r12") _, out("lr") _, options(nostack));
    }
    disarm().map_or(Ok(()), Err)
}

fn record(kind: u32, status: u32, address: u32, pc: u32) -> bool {
    let s = slot();
    if !s.armed.load(Ordering::SeqCst) {
        return false;
    }
    s.kind.store(kind, Ordering::SeqCst);
    s.status.store(status, Ordering::SeqCst);
    s.address.store(address, Ordering::SeqCst);
    s.pc.store(pc, Ordering::SeqCst);
    s.armed.store(false, Ordering::SeqCst);
    s.taken.store(true, Ordering::SeqCst);
    true
}

fn describe(status: u32) -> &'static str {
    match classify(status) {
        FaultClass::Translation => "translation fault",
        FaultClass::AccessFlag => "access flag fault",
        FaultClass::Permission => "permission fault",
        FaultClass::Domain => "domain fault",
        FaultClass::Other => "other fault",
    }
}

#[no_mangle]
extern "C" fn rt_data_abort(pc: u32) -> u32 {
    let status = DFSR.get();
    let address = DFAR.get();
    if record(0, status, address, pc) {
        return pc + 4;
    }
    crate::console::_print_unlocked(format_args!(
        "\nunexpected data abort on cpu {}: DFSR={:#x} ({}) DFAR={:#010x} PC={:#010x}\n",
        crate::cpu_id(),
        status,
        describe(status),
        address,
        pc
    ));
    crate::fail_now()
}

#[no_mangle]
extern "C" fn rt_prefetch_abort(pc: u32, caller_lr: u32) -> u32 {
    let status = IFSR.get();
    let address = IFAR.get();
    if record(1, status, address, pc) {
        return caller_lr;
    }
    crate::console::_print_unlocked(format_args!(
        "\nunexpected prefetch abort on cpu {}: IFSR={:#x} ({}) IFAR={:#010x} PC={:#010x}\n",
        crate::cpu_id(),
        status,
        describe(status),
        address,
        pc
    ));
    crate::fail_now()
}

#[no_mangle]
extern "C" fn rt_exception_fatal(vector: u32, pc: u32) -> ! {
    let name = match vector {
        0 => "reset",
        1 => "undefined instruction",
        2 => "supervisor call",
        6 => "IRQ",
        7 => "FIQ",
        _ => "unknown",
    };
    crate::console::_print_unlocked(format_args!(
        "\nunexpected exception on cpu {}: {} at PC={:#010x}\n",
        crate::cpu_id(),
        name,
        pc
    ));
    crate::fail_now()
}

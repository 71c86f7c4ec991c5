//! The shared runtime of the boot-test kernels (one copy for all of them).
//!
//! - [`board`]: the QEMU machine the kernel is built for (RAM, console, secondary start);
//! - [`start`]: reset entry, per-CPU stacks, exception vectors;
//! - [`console`]: PL011 output (`print!`/`println!`);
//! - [`semihosting`]: exit status and command-line arguments from QEMU;
//! - [`fault`]: expected-fault probes and the abort handlers;
//! - [`frames`]: the physical frame allocator, and [`frames::KernelMemory`];
//! - [`gic`]: GICv2 software-generated interrupts and the IRQ handler;
//! - [`cases`]: named cases reported as `case <name> ... ok|FAILED`;
//! - [`mmu`]: a minimal identity map to turn the MMU on;
//! - [`pmu`]: the cycle counter, for the benchmark kernel;
//! - [`smp`]: starting secondary CPUs (PSCI `CPU_ON`, or the pen) and running work on them.
//!
//! A test kernel is a `#![no_std] #![no_main]` binary that calls [`entry!`] with its main
//! function.

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod board;
pub mod cases;
pub mod console;
pub mod fault;
pub mod frames;
pub mod gic;
pub mod mmu;
pub mod pmu;
pub mod semihosting;
pub mod smp;
pub mod start;

pub use cases::{Case, CaseResult};

use armv7_mm::arch::cp15::{MPIDR, MPIDR_BITS};
use tock_registers::interfaces::Readable;

/// The errata of every CPU the test kernel runs, merged as each detects its backend
/// ([`detect_tlb`]). No IPI hook: no CPU QEMU models needs the full 798181 workaround
/// (its Cortex-A15 is r4p0), and recording one that did would fail loudly.
pub static ERRATA: armv7_mm::tlb::SystemErrata = armv7_mm::tlb::SystemErrata::new(None);

/// This CPU's TLB backend as a kernel detects it, with the system's errata, except that
/// `ACTLR` is not checked: QEMU reads `ACTLR` as zero and ignores writes (RAZ/WI) while
/// it does broadcast TLB maintenance to every CPU, so the strict check would refuse
/// broadcast on `-smp 4`. (Host tests show the refusal with real `ACTLR` values.)
pub fn detect_tlb() -> armv7_mm::tlb::Cp15Tlb {
    armv7_mm::tlb::Cp15Tlb::detect_with(armv7_mm::tlb::ActlrPolicy::AssumeEffective, &ERRATA)
        .unwrap_or_else(|e| panic!("TLB backend: {e}"))
}

/// This CPU's number (`MPIDR.Aff0`).
pub fn cpu_id() -> usize {
    MPIDR.read(MPIDR_BITS::AFF0) as usize
}

static mut CMDLINE: [u8; 256] = [0; 256];
static mut CMDLINE_LEN: usize = 0;

/// The whole semihosting command line (`-semihosting-config arg=...` words, space separated).
pub fn cmdline() -> &'static str {
    // SAFETY: written once by CPU 0 in `rt_primary_entry` before any test code runs and
    // never again.
    unsafe {
        let len = *core::ptr::addr_of!(CMDLINE_LEN);
        let all: &'static [u8; 256] = &*core::ptr::addr_of!(CMDLINE);
        core::str::from_utf8_unchecked(&all[..len])
    }
}

/// The value of `key=value` on the command line, if present.
pub fn arg(key: &str) -> Option<&'static str> {
    cmdline().split(' ').find_map(|w| {
        let (k, v) = w.split_once('=')?;
        (k == key).then_some(v)
    })
}

/// Whether the bare word `flag` is on the command line.
pub fn flag(flag: &str) -> bool {
    cmdline().split(' ').any(|w| w == flag)
}

/// The TLB errata workarounds this CPU needs (`ErrataConfig::detect`: 720789 on QEMU's
/// Cortex-A9 r0p0). Backends the tests build apply these, so on every machine the tests run
/// what a kernel on that CPU must run. Panics on a CPU that needs the full 798181
/// workaround: it needs an IPI hook, which the runtime does not have (QEMU's A15 is r4p0).
pub fn cpu_errata() -> armv7_mm::tlb::ErrataConfig {
    armv7_mm::tlb::ErrataConfig::detect(None).unwrap_or_else(|e| panic!("errata: {e}"))
}

/// RAM size in bytes (`mem=<MiB>` argument; 128 MiB when absent).
pub fn ram_size() -> u64 {
    arg("mem")
        .and_then(|m| m.parse::<u64>().ok())
        .unwrap_or(128)
        << 20
}

/// Fails the run now: prints the failing case (if any) and exits with status 1.
pub fn fail_now() -> ! {
    if let Some(case) = cases::current() {
        console::_print_unlocked(format_args!("case {} ... FAILED\n", case));
    }
    semihosting::exit(1)
}

extern "Rust" {
    fn rt_kernel_main() -> !;
}

#[no_mangle]
extern "C" fn rt_primary_entry(_cpu: usize) -> ! {
    // SAFETY: CPU 0, before any other code reads CMDLINE.
    unsafe {
        let buf = &mut *core::ptr::addr_of_mut!(CMDLINE);
        let len = semihosting::cmdline(buf).len();
        *core::ptr::addr_of_mut!(CMDLINE_LEN) = len;
    }
    board::prepare_secondaries();
    frames::init(ram_size());
    // SAFETY: the test kernel defines `rt_kernel_main` through `entry!`.
    unsafe { rt_kernel_main() }
}

#[no_mangle]
extern "C" fn rt_secondary_entry(cpu: usize) -> ! {
    smp::secondary_main(cpu)
}

/// Declares the test kernel's main function: `rt::entry!(main);` with `fn main() -> !`.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[no_mangle]
        fn rt_kernel_main() -> ! {
            let f: fn() -> ! = $main;
            f()
        }
    };
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    console::_print_unlocked(format_args!("\npanic on cpu {}: {}\n", cpu_id(), info));
    fail_now()
}

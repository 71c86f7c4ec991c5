//! The QEMU machine the kernel is built for: where RAM and the console are, and how the
//! secondary CPUs start. One kernel ELF per machine: the `board-*` feature of the tests
//! package (none: `-M virt`) selects the constants here and, through `tests/build.rs`, the
//! load address in `linker.ld` (64 KiB into RAM).
//!
//! | machine | CPUs | RAM | PL011 | secondaries |
//! | --- | --- | --- | --- | --- |
//! | `virt` | any (`-cpu`) | `0x4000_0000` | `0x0900_0000` | PSCI `CPU_ON` (`hvc #0`) |
//! | `vexpress-a9` | Cortex-A9 MPCore r0p0 | `0x6000_0000` | `0x1000_9000` | all enter the ELF entry: held in the runtime's pen |
//! | `raspi2b` | 4x Cortex-A7 | `0x0` | `0x3F20_1000` | all enter the ELF entry: held in the runtime's pen |
//!
//! QEMU 7.2 (`hw/arm/boot.c`, `do_cpu_reset`) sets *every* CPU's PC to the entry of a bare
//! ELF (`is_linux` is false, so the board's secondary boot stub is neither written nor
//! used: on raspi2b the stub at `0x300` that polls the BCM2836 mailbox 3 does not run).
//! Checked by experiment: the secondaries of both boards run `_start` and wait in the pen.
//! Only `virt` (PSCI) keeps them powered off until `CPU_ON`. Later QEMU releases send
//! non-Linux secondaries to the board's stub too; for raspi2b, `prepare_secondaries`
//! already writes `_start` to each secondary's mailbox 3, which such a stub jumps to (then
//! the CPU waits in the pen as before). vexpress-a9's stub would also need a GIC SGI.

#[cfg(all(feature = "board-vexpress-a9", feature = "board-raspi2b"))]
compile_error!("at most one board-* feature may be enabled");

/// How secondary CPUs get to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Secondaries {
    /// Powered off at reset; PSCI `CPU_ON` through `hvc #0` starts one at `_start`.
    Psci,
    /// Every CPU enters `_start` at reset; CPUs other than 0 wait in the runtime's pen
    /// until [`crate::smp::start`] releases them.
    Pen,
}

#[cfg(not(any(feature = "board-vexpress-a9", feature = "board-raspi2b")))]
mod chosen {
    pub const MACHINE: &str = "virt";
    pub const RAM_BASE: u64 = 0x4000_0000;
    pub const UART_BASE: usize = 0x0900_0000;
    pub const SECONDARIES: super::Secondaries = super::Secondaries::Psci;
    pub const FREE_VA: u32 = 0x1000_0000;
}

#[cfg(feature = "board-vexpress-a9")]
mod chosen {
    pub const MACHINE: &str = "vexpress-a9";
    pub const RAM_BASE: u64 = 0x6000_0000;
    pub const UART_BASE: usize = 0x1000_9000;
    pub const SECONDARIES: super::Secondaries = super::Secondaries::Pen;
    // Not 0x1000_0000: the UART page is there.
    pub const FREE_VA: u32 = 0x2000_0000;
}

#[cfg(feature = "board-raspi2b")]
mod chosen {
    pub const MACHINE: &str = "raspi2b";
    pub const RAM_BASE: u64 = 0x0;
    pub const UART_BASE: usize = 0x3F20_1000;
    pub const SECONDARIES: super::Secondaries = super::Secondaries::Pen;
    pub const FREE_VA: u32 = 0x1000_0000;
}

/// QEMU's name of the machine (`-M`).
pub const MACHINE: &str = chosen::MACHINE;
/// Physical address of the first byte of RAM (the image is linked 64 KiB above it).
pub const RAM_BASE: u64 = chosen::RAM_BASE;
/// Physical (and, in every test's map, virtual) address of the PL011 UART.
pub const UART_BASE: usize = chosen::UART_BASE;
/// How the secondary CPUs start.
pub const SECONDARIES: Secondaries = chosen::SECONDARIES;

/// Called by CPU 0 at boot, MMU off: on raspi2b, writes `_start` into mailbox 3 of CPUs
/// 1-3 (BCM2836 local peripherals: write-set register at `0x4000_008C + 16 * cpu`), which
/// is what a firmware-style spin loop waits for. QEMU 7.2 runs no such loop for an ELF
/// (the secondaries are in the pen already), so there the writes change nothing: the
/// mailbox interrupts are disabled at reset. Nothing to do on the other boards.
pub(crate) fn prepare_secondaries() {
    #[cfg(feature = "board-raspi2b")]
    {
        extern "C" {
            fn _start();
        }
        for cpu in 1..crate::start::MAX_CPUS {
            let set = (0x4000_008C + 16 * cpu) as *mut u32;
            // SAFETY: with the MMU off this is the BCM2836 mailbox write-set register of
            // `cpu` (device memory); setting bits there only signals that CPU.
            unsafe { core::ptr::write_volatile(set, _start as *const () as usize as u32) };
        }
    }
}
/// A 256 MiB-aligned VA window of 256 MiB below 1 GiB that neither RAM nor the UART is in:
/// where tests put the mappings they create and destroy.
pub const FREE_VA: u32 = chosen::FREE_VA;

//! CP15 system registers, described with `tock-registers` bitfields.
//!
//! This follows the pattern the `cortex-a`/`aarch64-cpu` crates use for AArch64: each
//! register is a zero-sized value implementing [`Readable`] (and [`Writeable`] when it can
//! be written), so callers use `SCTLR.is_set(SCTLR::M)` or
//! `SCTLR.modify(SCTLR::M::Enable)` instead of raw `mrc`/`mcr` and shifts.
//!
//! Writing most of these registers changes how memory is translated; the accessors are
//! safe to *call* from this crate's point of view only because every caller in the crate
//! documents why the value it writes keeps the current context valid. Kernels using these
//! directly carry the same obligation.

// The accessor types in `reg` are documented by their constants; the field layouts live in
// `super::fields` (re-exported here), which host code can use too.

use tock_registers::interfaces::{Readable, Writeable};

pub use super::cpu::{JoinError, Joined};
pub use super::fields::*;

/// Defines a zero-sized 32-bit CP15 register accessor.
macro_rules! cp15_register {
    ($(#[$doc:meta])* $name:ident, $bits:ty, $crn:literal, $op1:literal, $crm:literal, $op2:literal, rw) => {
        cp15_register!($(#[$doc])* $name, $bits, $crn, $op1, $crm, $op2, ro);
        impl Writeable for reg::$name {
            type T = u32;
            type R = $bits;
            #[inline(always)]
            fn set(&self, value: u32) {
                // SAFETY: the encoding names an existing PL1 register; the caller's choice of
                // value is its responsibility, documented at the call site.
                unsafe {
                    core::arch::asm!(
                        concat!("mcr p15, ", $op1, ", {0}, ", $crn, ", ", $crm, ", ", $op2),
                        in(reg) value,
                        options(nostack, preserves_flags)
                    )
                }
            }
        }
    };
    ($(#[$doc:meta])* $name:ident, $bits:ty, $crn:literal, $op1:literal, $crm:literal, $op2:literal, ro) => {
        $(#[$doc])*
        #[allow(non_upper_case_globals)]
        pub const $name: reg::$name = reg::$name;
        impl Readable for reg::$name {
            type T = u32;
            type R = $bits;
            #[inline(always)]
            fn get(&self) -> u32 {
                let value: u32;
                // SAFETY: reading a CP15 identification/status register has no side effects.
                unsafe {
                    core::arch::asm!(
                        concat!("mrc p15, ", $op1, ", {0}, ", $crn, ", ", $crm, ", ", $op2),
                        out(reg) value,
                        options(nomem, nostack, preserves_flags)
                    )
                }
                value
            }
        }
    };
}

/// Defines a zero-sized 64-bit CP15 register accessor (`mrrc`/`mcrr`, LPAE registers).
macro_rules! cp15_register64 {
    ($(#[$doc:meta])* $name:ident, $bits:ty, $op1:literal, $crm:literal) => {
        $(#[$doc])*
        #[allow(non_upper_case_globals)]
        pub const $name: reg::$name = reg::$name;
        impl Readable for reg::$name {
            type T = u64;
            type R = $bits;
            #[inline(always)]
            fn get(&self) -> u64 {
                let (lo, hi): (u32, u32);
                // SAFETY: reading a 64-bit CP15 register has no side effects; the register
                // exists on CPUs with LPAE, which the accessor's documentation requires.
                unsafe {
                    core::arch::asm!(
                        concat!("mrrc p15, ", $op1, ", {0}, {1}, ", $crm),
                        out(reg) lo,
                        out(reg) hi,
                        options(nomem, nostack, preserves_flags)
                    )
                }
                (u64::from(hi) << 32) | u64::from(lo)
            }
        }
        impl Writeable for reg::$name {
            type T = u64;
            type R = $bits;
            #[inline(always)]
            fn set(&self, value: u64) {
                // SAFETY: as for the 32-bit accessors: the encoding names an existing PL1
                // register (on LPAE CPUs) and the value is the caller's responsibility.
                unsafe {
                    core::arch::asm!(
                        concat!("mcrr p15, ", $op1, ", {0}, {1}, ", $crm),
                        in(reg) value as u32,
                        in(reg) (value >> 32) as u32,
                        options(nostack, preserves_flags)
                    )
                }
            }
        }
    };
}

/// The zero-sized accessor types; use the constants of the same name.
#[allow(non_camel_case_types)]
pub mod reg {
    macro_rules! types {
        ($($name:ident),*) => {$(
            #[doc = concat!("Accessor type for `", stringify!($name), "`.")]
            #[derive(Clone, Copy, Debug)]
            pub struct $name;
        )*};
    }
    types!(
        SCTLR, TTBCR, TTBR0, TTBR1, DACR, CONTEXTIDR, PRRR, NMRR, PAR, DFSR, DFAR, IFSR, IFAR,
        MPIDR, MIDR, REVIDR, ID_MMFR0, ID_MMFR1, ID_MMFR2, ID_MMFR3, VBAR, TTBR0_64, TTBR1_64,
        PAR_64, MAIR0, MAIR1, ACTLR
    );
}

cp15_register!(
    /// Auxiliary Control Register (`c1, 0, c0, 1`), IMPLEMENTATION DEFINED: on Cortex-A5/A7/
    /// A9/A12/A15/A17 and Brahma-B15 bit 6 is `SMP` (the core takes part in coherency and
    /// broadcast maintenance), on A5/A9 bit 0 is `FW` (its maintenance is broadcast). Often
    /// writable only from Secure state (`NSACR`); write it through [`join_coherency`], which
    /// knows which parts have which bits and checks that the write took.
    ACTLR, ACTLR_BITS::Register, "c1", "0", "c0", "1", rw);
cp15_register!(
    /// System Control Register (`c1, 0, c0, 0`).
    SCTLR, SCTLR_BITS::Register, "c1", "0", "c0", "0", rw);
cp15_register!(
    /// Translation Table Base Control Register (`c2, 0, c0, 2`).
    TTBCR, TTBCR_BITS::Register, "c2", "0", "c0", "2", rw);
cp15_register!(
    /// Translation Table Base Register 0, 32-bit view (`c2, 0, c0, 0`).
    TTBR0, TTBR_BITS::Register, "c2", "0", "c0", "0", rw);
cp15_register!(
    /// Translation Table Base Register 1, 32-bit view (`c2, 0, c0, 1`).
    TTBR1, TTBR_BITS::Register, "c2", "0", "c0", "1", rw);
cp15_register!(
    /// Domain Access Control Register (`c3, 0, c0, 0`).
    DACR, DACR_BITS::Register, "c3", "0", "c0", "0", rw);
cp15_register!(
    /// Context ID Register: ASID in bits \[7:0\] (`c13, 0, c0, 1`).
    CONTEXTIDR, CONTEXTIDR_BITS::Register, "c13", "0", "c0", "1", rw);
cp15_register!(
    /// Primary Region Remap Register (`c10, 0, c2, 0`).
    PRRR, PRRR_BITS::Register, "c10", "0", "c2", "0", rw);
cp15_register!(
    /// Normal Memory Remap Register (`c10, 0, c2, 1`).
    NMRR, NMRR_BITS::Register, "c10", "0", "c2", "1", rw);
cp15_register!(
    /// Memory Attribute Indirection Register 0 (`c10, 0, c2, 0`, the encoding of `PRRR`):
    /// attribute slots 0 to 3 when `TTBCR.EAE` = 1.
    MAIR0, RAW::Register, "c10", "0", "c2", "0", rw);
cp15_register!(
    /// Memory Attribute Indirection Register 1 (`c10, 0, c2, 1`, the encoding of `NMRR`):
    /// attribute slots 4 to 7 when `TTBCR.EAE` = 1.
    MAIR1, RAW::Register, "c10", "0", "c2", "1", rw);
cp15_register!(
    /// Physical Address Register, 32-bit view (`c7, 0, c4, 0`).
    PAR, PAR_BITS::Register, "c7", "0", "c4", "0", rw);
cp15_register!(
    /// Data Fault Status Register (`c5, 0, c0, 0`).
    DFSR, DFSR_BITS::Register, "c5", "0", "c0", "0", rw);
cp15_register!(
    /// Data Fault Address Register (`c6, 0, c0, 0`).
    DFAR, RAW::Register, "c6", "0", "c0", "0", rw);
cp15_register!(
    /// Instruction Fault Status Register (`c5, 0, c0, 1`).
    IFSR, IFSR_BITS::Register, "c5", "0", "c0", "1", rw);
cp15_register!(
    /// Instruction Fault Address Register (`c6, 0, c0, 2`).
    IFAR, RAW::Register, "c6", "0", "c0", "2", rw);
cp15_register!(
    /// Vector Base Address Register (`c12, 0, c0, 0`).
    VBAR, RAW::Register, "c12", "0", "c0", "0", rw);
cp15_register!(
    /// Multiprocessor Affinity Register (`c0, 0, c0, 5`).
    MPIDR, MPIDR_BITS::Register, "c0", "0", "c0", "5", ro);
cp15_register!(
    /// Main ID Register (`c0, 0, c0, 0`).
    MIDR, MIDR_BITS::Register, "c0", "0", "c0", "0", ro);
cp15_register!(
    /// Revision ID Register (`c0, 0, c0, 6`).
    REVIDR, REVIDR_BITS::Register, "c0", "0", "c0", "6", ro);
cp15_register!(
    /// Memory Model Feature Register 0 (`c0, 0, c1, 4`).
    ID_MMFR0, ID_MMFR0_BITS::Register, "c0", "0", "c1", "4", ro);
cp15_register!(
    /// Memory Model Feature Register 1 (`c0, 0, c1, 5`).
    ID_MMFR1, ID_MMFR1_BITS::Register, "c0", "0", "c1", "5", ro);
cp15_register!(
    /// Memory Model Feature Register 2 (`c0, 0, c1, 6`).
    ID_MMFR2, ID_MMFR2_BITS::Register, "c0", "0", "c1", "6", ro);
cp15_register!(
    /// Memory Model Feature Register 3 (`c0, 0, c1, 7`).
    ID_MMFR3, ID_MMFR3_BITS::Register, "c0", "0", "c1", "7", ro);

cp15_register64!(
    /// Translation Table Base Register 0, 64-bit view (`mcrr/mrrc p15, 0, .., c2`). Only on
    /// CPUs with LPAE (`ID_MMFR0.VMSA` >= 5); holds the ASID when `TTBCR.EAE` = 1 and
    /// `TTBCR.A1` = 0.
    TTBR0_64, TTBR64_BITS::Register, "0", "c2");
cp15_register64!(
    /// Translation Table Base Register 1, 64-bit view (`mcrr/mrrc p15, 1, .., c2`). Only on
    /// CPUs with LPAE.
    TTBR1_64, TTBR64_BITS::Register, "1", "c2");
cp15_register64!(
    /// Physical Address Register, 64-bit view (`mcrr/mrrc p15, 0, .., c7`): the format an
    /// address translation operation uses when `TTBCR.EAE` = 1. Only on CPUs with LPAE.
    PAR_64, PAR64_BITS::Register, "0", "c7");

/// Translates `va` with the current stage-1 PL1 read permission check (`ATS1CPR`) and
/// returns the resulting `PAR`.
#[inline]
pub fn ats1cpr(va: u32) -> u32 {
    // SAFETY: ATS1CPR only writes PAR; the isb makes the result visible to the mrc.
    unsafe {
        core::arch::asm!(
            "mcr p15, 0, {0}, c7, c8, 0",
            "isb",
            in(reg) va,
            options(nostack, preserves_flags)
        );
    }
    PAR.get()
}

/// Switches this CPU into coherency and broadcast maintenance: sets `ACTLR.SMP` (and
/// `ACTLR.FW` on a Cortex-A5/A9) with a read-modify-write if they are not set yet, then
/// reads `ACTLR` back. It never clears a bit (a Cortex-A7 with `DDVM` set stays refused by
/// detection). Call it on each CPU, early in its bring-up; afterwards
/// `Cp15Tlb::detect` sees the bits (see [`crate::tlb::select`] for which parts need which
/// and for what the crate cannot see: interconnect DVM, the Cortex-A9 SCU).
///
/// # Errors
/// - [`JoinError::UnknownPart`]: a part whose `ACTLR` the crate does not know; nothing is
///   written.
/// - [`JoinError::DidNotStick`]: the bits read back clear after the write: `ACTLR` is
///   writable only from Secure state here (`NSACR`; on A5/A9 Non-secure state may set
///   `SMP` but never `FW`), or the CPU is emulated with a RAZ/WI `ACTLR` (QEMU). The
///   kernel's firmware must set them, or the kernel does without broadcast.
///
/// # Safety
/// - Runs before this CPU turns on its data cache and MMU, and before it issues any cache
///   or TLB maintenance: the Cortex-A7/A15 TRMs require `SMP` to be set before the caches
///   and MMU are enabled, and the Cortex-A9 MPCore TRM's bring-up sets it with the data
///   cache, after the SCU is enabled. (Where the write is ignored, as on QEMU, calling it
///   later changes nothing.)
/// - On a Cortex-A9 MPCore the boot CPU has enabled the SCU.
/// - In Non-secure state, `NSACR` lets this state write `ACTLR.SMP` (`NSACR[18]`,
///   `NS_SMP`), or the bits are already set: where `ACTLR` is read-only, a write may be
///   UNDEFINED and trap instead of being ignored. (Nothing is written when the bits are
///   already set.)
pub unsafe fn join_coherency() -> Result<Joined, JoinError> {
    super::cpu::join_with(
        MIDR.get(),
        || ACTLR.get(),
        |value| {
            super::barrier::dsb_sy();
            // The caller guarantees (see `# Safety`) that the write is allowed and comes
            // before this CPU relies on caches or maintenance; `value` keeps every other
            // bit as it was.
            ACTLR.set(value);
            super::barrier::isb();
        },
    )
}

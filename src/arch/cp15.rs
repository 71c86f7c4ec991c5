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

// `register_bitfields!` generates items (field value enums, `Register` types) that cannot
// carry doc comments; the fields themselves are documented.
#![allow(missing_docs)]

use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_bitfields;

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
        MPIDR, MIDR, REVIDR, ID_MMFR0, ID_MMFR1, ID_MMFR2, ID_MMFR3, VBAR
    );
}

register_bitfields! {u32,
    /// System Control Register.
    pub SCTLR_BITS [
        /// MMU enable.
        M OFFSET(0) NUMBITS(1) [Disable = 0, Enable = 1],
        /// Alignment fault checking.
        A OFFSET(1) NUMBITS(1) [],
        /// Data and unified caches enable.
        C OFFSET(2) NUMBITS(1) [],
        /// Branch prediction enable.
        Z OFFSET(11) NUMBITS(1) [],
        /// Instruction cache enable.
        I OFFSET(12) NUMBITS(1) [],
        /// High exception vectors.
        V OFFSET(13) NUMBITS(1) [],
        /// Write implies XN.
        WXN OFFSET(19) NUMBITS(1) [],
        /// TEX remap enable.
        TRE OFFSET(28) NUMBITS(1) [],
        /// Access flag enable.
        AFE OFFSET(29) NUMBITS(1) [],
        /// Thumb exception entry.
        TE OFFSET(30) NUMBITS(1) []
    ],
    /// Translation Table Base Control Register (short-descriptor view, plus EAE).
    pub TTBCR_BITS [
        /// Width of the TTBR0 region: TTBR0 translates VAs below `1 << (32 - N)`.
        N OFFSET(0) NUMBITS(3) [],
        /// Translation table walks through TTBR0 disabled.
        PD0 OFFSET(4) NUMBITS(1) [],
        /// Translation table walks through TTBR1 disabled.
        PD1 OFFSET(5) NUMBITS(1) [],
        /// Extended address enable (LPAE long descriptors).
        EAE OFFSET(31) NUMBITS(1) []
    ],
    /// Physical Address Register after an `ATS1C**` operation (short-descriptor format).
    pub PAR_BITS [
        /// The translation aborted.
        F OFFSET(0) NUMBITS(1) [],
        /// On a fault: fault status (FS[4:0] in bits \[5:1\]).
        FST OFFSET(1) NUMBITS(6) [],
        /// Successful translation: bits \[31:12\] of the physical address.
        PA OFFSET(12) NUMBITS(20) []
    ],
    /// Multiprocessor Affinity Register.
    pub MPIDR_BITS [
        /// Affinity level 0 (CPU number in a cluster).
        AFF0 OFFSET(0) NUMBITS(8) [],
        /// Affinity level 1.
        AFF1 OFFSET(8) NUMBITS(8) [],
        /// Uniprocessor system.
        U OFFSET(30) NUMBITS(1) [],
        /// Multiprocessing extensions implemented (format bit).
        MP OFFSET(31) NUMBITS(1) []
    ],
    /// Plain 32-bit register without named fields.
    pub RAW [
        /// The whole register.
        VALUE OFFSET(0) NUMBITS(32) []
    ]
}

cp15_register!(
    /// System Control Register (`c1, 0, c0, 0`).
    SCTLR, SCTLR_BITS::Register, "c1", "0", "c0", "0", rw);
cp15_register!(
    /// Translation Table Base Control Register (`c2, 0, c0, 2`).
    TTBCR, TTBCR_BITS::Register, "c2", "0", "c0", "2", rw);
cp15_register!(
    /// Translation Table Base Register 0, 32-bit view (`c2, 0, c0, 0`).
    TTBR0, RAW::Register, "c2", "0", "c0", "0", rw);
cp15_register!(
    /// Translation Table Base Register 1, 32-bit view (`c2, 0, c0, 1`).
    TTBR1, RAW::Register, "c2", "0", "c0", "1", rw);
cp15_register!(
    /// Domain Access Control Register (`c3, 0, c0, 0`).
    DACR, RAW::Register, "c3", "0", "c0", "0", rw);
cp15_register!(
    /// Context ID Register: ASID in bits \[7:0\] (`c13, 0, c0, 1`).
    CONTEXTIDR, RAW::Register, "c13", "0", "c0", "1", rw);
cp15_register!(
    /// Primary Region Remap Register (`c10, 0, c2, 0`).
    PRRR, RAW::Register, "c10", "0", "c2", "0", rw);
cp15_register!(
    /// Normal Memory Remap Register (`c10, 0, c2, 1`).
    NMRR, RAW::Register, "c10", "0", "c2", "1", rw);
cp15_register!(
    /// Physical Address Register, 32-bit view (`c7, 0, c4, 0`).
    PAR, PAR_BITS::Register, "c7", "0", "c4", "0", rw);
cp15_register!(
    /// Data Fault Status Register (`c5, 0, c0, 0`).
    DFSR, RAW::Register, "c5", "0", "c0", "0", rw);
cp15_register!(
    /// Data Fault Address Register (`c6, 0, c0, 0`).
    DFAR, RAW::Register, "c6", "0", "c0", "0", rw);
cp15_register!(
    /// Instruction Fault Status Register (`c5, 0, c0, 1`).
    IFSR, RAW::Register, "c5", "0", "c0", "1", rw);
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
    MIDR, RAW::Register, "c0", "0", "c0", "0", ro);
cp15_register!(
    /// Revision ID Register (`c0, 0, c0, 6`).
    REVIDR, RAW::Register, "c0", "0", "c0", "6", ro);
cp15_register!(
    /// Memory Model Feature Register 0 (`c0, 0, c1, 4`).
    ID_MMFR0, RAW::Register, "c0", "0", "c1", "4", ro);
cp15_register!(
    /// Memory Model Feature Register 1 (`c0, 0, c1, 5`).
    ID_MMFR1, RAW::Register, "c0", "0", "c1", "5", ro);
cp15_register!(
    /// Memory Model Feature Register 2 (`c0, 0, c1, 6`).
    ID_MMFR2, RAW::Register, "c0", "0", "c1", "6", ro);
cp15_register!(
    /// Memory Model Feature Register 3 (`c0, 0, c1, 7`).
    ID_MMFR3, RAW::Register, "c0", "0", "c1", "7", ro);

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

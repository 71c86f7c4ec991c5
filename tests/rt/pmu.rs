//! The ARMv7 performance monitors' cycle counter (`PMCCNTR`).
//!
//! Under `qemu-system-arm -icount shift=0` the virtual clock advances one nanosecond per
//! instruction and QEMU derives `PMCCNTR` from that clock at 1 GHz, so a cycle count *is* an
//! instruction count, and it repeats exactly from one run to the next. QEMU ends a
//! translation block at every `PMCCNTR` read (the register is marked as I/O), so a reading
//! is exact to the instruction, not to the block.
//!
//! This is the one file of the test runtime with performance-monitor CP15 accesses; the
//! library never touches these registers.
//!
//! Registers (`mrc/mcr p15, 0, Rt, c9, CRm, op2`):
//!
//! | register | CRm, op2 | use |
//! | --- | --- | --- |
//! | `PMCR` | c12, 0 | E (bit 0) enable, C (bit 2) reset `PMCCNTR`, D (bit 3) divide by 64 (kept clear) |
//! | `PMCNTENSET` | c12, 1 | bit 31 enables `PMCCNTR` |
//! | `PMCCNTR` | c13, 0 | the cycle counter (32 bits) |

use core::arch::asm;

const PMCR_E: u32 = 1 << 0;
const PMCR_C: u32 = 1 << 2;
const PMCR_D: u32 = 1 << 3;
/// `PMCNTENSET` bit of the cycle counter.
const CYCLE_COUNTER: u32 = 1 << 31;

fn read_pmcr() -> u32 {
    let v: u32;
    // SAFETY: reading PMCR at PL1 has no side effects.
    unsafe {
        asm!("mrc p15, 0, {}, c9, c12, 0", out(reg) v, options(nomem, nostack, preserves_flags))
    };
    v
}

fn write_pmcr(v: u32) {
    // SAFETY: PMCR only controls the performance monitors, which nothing else in the test
    // kernels uses.
    unsafe {
        asm!("mcr p15, 0, {}, c9, c12, 0", in(reg) v, options(nomem, nostack, preserves_flags))
    };
}

fn isb() {
    // SAFETY: a barrier has no operands and changes no program state.
    unsafe { asm!("isb", options(nostack, preserves_flags)) };
}

/// Resets and starts the cycle counter, counting every cycle (no divider). Event counters
/// stay off: QEMU's Cortex-A15 has no `PMCEID0` (it is UNDEFINED there), so whether the
/// instructions-executed event exists cannot be asked, and under `-icount shift=0` the cycle
/// counter already counts instructions.
pub fn init() {
    let pmcr = (read_pmcr() & !PMCR_D) | PMCR_E | PMCR_C;
    write_pmcr(pmcr);
    // SAFETY: enabling the cycle counter only affects the performance monitors.
    unsafe {
        asm!("mcr p15, 0, {}, c9, c12, 1", in(reg) CYCLE_COUNTER, options(nomem, nostack, preserves_flags))
    };
    isb();
}

/// Whether the cycle counter is running (`PMCR.E` set and `PMCCNTR` advancing).
pub fn running() -> bool {
    let a = cycles();
    let b = cycles();
    read_pmcr() & PMCR_E != 0 && a != b
}

/// The cycle counter. 32 bits: take differences with `wrapping_sub` (a reading spans at
/// most 2^32 instructions under `-icount shift=0`, about four seconds of guest time).
#[inline(always)]
pub fn cycles() -> u32 {
    let v: u32;
    // SAFETY: reading PMCCNTR at PL1 has no side effects. Not `nomem`: the compiler must not
    // move memory accesses of the measured code across the reading.
    unsafe { asm!("mrc p15, 0, {}, c9, c13, 0", out(reg) v, options(nostack, preserves_flags)) };
    v
}

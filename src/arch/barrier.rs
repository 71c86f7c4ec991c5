//! Memory and instruction barriers.

use core::arch::asm;

/// `dsb sy`: completes all outstanding memory accesses and maintenance operations.
#[inline(always)]
pub fn dsb_sy() {
    // SAFETY: a barrier has no operands and changes no program state.
    unsafe { asm!("dsb sy", options(nostack, preserves_flags)) }
}

/// `dsb ishst`: stores (e.g. descriptor writes) visible in the inner shareable domain.
#[inline(always)]
pub fn dsb_ishst() {
    // SAFETY: a barrier has no operands and changes no program state.
    unsafe { asm!("dsb ishst", options(nostack, preserves_flags)) }
}

/// `dsb ish`: completes accesses and broadcast maintenance in the inner shareable domain.
#[inline(always)]
pub fn dsb_ish() {
    // SAFETY: a barrier has no operands and changes no program state.
    unsafe { asm!("dsb ish", options(nostack, preserves_flags)) }
}

/// `dsb nshst`: stores visible to this CPU's table walker.
#[inline(always)]
pub fn dsb_nshst() {
    // SAFETY: a barrier has no operands and changes no program state.
    unsafe { asm!("dsb nshst", options(nostack, preserves_flags)) }
}

/// `dsb nsh`: completes this CPU's accesses and local maintenance.
#[inline(always)]
pub fn dsb_nsh() {
    // SAFETY: a barrier has no operands and changes no program state.
    unsafe { asm!("dsb nsh", options(nostack, preserves_flags)) }
}

/// `dmb ish`: orders memory accesses in the inner shareable domain.
#[inline(always)]
pub fn dmb_ish() {
    // SAFETY: a barrier has no operands and changes no program state.
    unsafe { asm!("dmb ish", options(nostack, preserves_flags)) }
}

/// `isb`: later instructions are fetched after the context changes before it.
#[inline(always)]
pub fn isb() {
    // SAFETY: a barrier has no operands and changes no program state.
    unsafe { asm!("isb", options(nostack, preserves_flags)) }
}

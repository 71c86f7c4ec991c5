//! Raw TLB and branch-predictor maintenance instructions.
//!
//! These are the bare encodings; the ordering rules (a `dsb` before so the walker sees the
//! new tables, a `dsb` + `isb` after so the invalidate has completed) are the job of the
//! backends in [`crate::tlb`], which bracket a whole batch of these with one pair of
//! barriers.
//!
//! The operand of the by-VA forms is `VA[31:12] | ASID[7:0]` (the ASID is ignored by the
//! `*A` "all ASIDs" forms). None of them can fault.

macro_rules! tlbi {
    ($(#[$doc:meta])* $name:ident, $crm:literal, $op2:literal, $crn:literal) => {
        $(#[$doc])*
        #[inline(always)]
        pub fn $name(operand: u32) {
            // SAFETY: TLB/branch-predictor invalidation only drops cached translations or
            // predictions; it never changes memory or registers and cannot fault.
            unsafe {
                core::arch::asm!(
                    concat!("mcr p15, 0, {0}, ", $crn, ", ", $crm, ", ", $op2),
                    in(reg) operand,
                    options(nostack, preserves_flags)
                )
            }
        }
    };
}

tlbi!(
    /// TLBIALL: invalidate this CPU's entire unified TLB.
    tlbiall, "c7", "0", "c8");
tlbi!(
    /// TLBIMVA: invalidate this CPU's entries for one VA and ASID (and global ones for the VA).
    tlbimva, "c7", "1", "c8");
tlbi!(
    /// TLBIASID: invalidate this CPU's non-global entries of one ASID.
    tlbiasid, "c7", "2", "c8");
tlbi!(
    /// TLBIMVAA: invalidate this CPU's entries for one VA, all ASIDs.
    tlbimvaa, "c7", "3", "c8");
tlbi!(
    /// TLBIALLIS: invalidate every TLB in the inner shareable domain.
    tlbiallis, "c3", "0", "c8");
tlbi!(
    /// TLBIMVAIS: invalidate one VA and ASID in the inner shareable domain.
    tlbimvais, "c3", "1", "c8");
tlbi!(
    /// TLBIASIDIS: invalidate one ASID in the inner shareable domain.
    tlbiasidis, "c3", "2", "c8");
tlbi!(
    /// TLBIMVAAIS: invalidate one VA, all ASIDs, in the inner shareable domain.
    tlbimvaais, "c3", "3", "c8");
tlbi!(
    /// BPIALL: invalidate this CPU's branch predictor.
    bpiall, "c5", "6", "c7");
tlbi!(
    /// BPIALLIS: invalidate branch predictors in the inner shareable domain.
    bpiallis, "c1", "6", "c7");
tlbi!(
    /// ICIALLU: invalidate this CPU's instruction cache to the point of unification.
    iciallu, "c5", "0", "c7");

//! MMU set-up and context switching for short-descriptor tables
//! ([`crate::short::AddressSpace`]), and how descriptor writes reach the table walker.
//!
//! - [`detect_features`]: what the tables may use on this CPU;
//! - [`ttbr_value`]: a table base with the walk attributes (write-back write-allocate,
//!   shareable walks);
//! - [`enable_tex_remap`]: `PRRR`/`NMRR` from [`crate::short::attrs`], `SCTLR.TRE = 1`,
//!   `AFE = 0`;
//! - [`set_split`]: `TTBR1` + `TTBCR.N`;
//! - [`activate`]: the architected `TTBR0` + ASID switch; [`switch_context`]: the same
//!   with an ASID allocator's owed local flush (see [`crate::asid`]);
//! - [`clean_dcache_to_pou`] / [`publish_table_writes`]: walk coherency, used by the
//!   address space after it writes descriptors.

use tock_registers::interfaces::{ReadWriteable, Readable, Writeable};

use super::barrier::{dsb_ish, dsb_ishst, dsb_sy, isb};
use super::cp15::{
    CONTEXTIDR, CONTEXTIDR_BITS, ID_MMFR0, ID_MMFR3, MPIDR, MPIDR_BITS, NMRR, PRRR, SCTLR,
    SCTLR_BITS, TTBCR, TTBCR_BITS, TTBR0, TTBR1,
};
use super::tlbi;
use crate::addr::PhysAddr;
use crate::error::ActivateError;
use crate::short::{attrs, Features};
use crate::tlb::Asid;

/// The optional short-descriptor features of this CPU, from `ID_MMFR0`/`ID_MMFR3`.
#[must_use]
pub fn detect_features() -> Features {
    Features::from_id_regs(ID_MMFR0.get(), ID_MMFR3.get())
}

/// `TTBR0`/`TTBR1` value for the table at `root`: walks are inner and outer write-back
/// write-allocate and shareable (inner shareable with the multiprocessing extensions,
/// which split `IRGN` over bits 6 and 0; without them bit 0 is plain "inner cacheable").
#[must_use]
pub fn ttbr_value(root: PhysAddr) -> u32 {
    let base = root.as_u64() as u32;
    // RGN = 01 (outer WB-WA) at bits [4:3], S at bit 1.
    let common = (0b01 << 3) | (1 << 1);
    if MPIDR.is_set(MPIDR_BITS::MP) {
        // IRGN = 01 (inner WB-WA): IRGN[0] is bit 6, IRGN[1] bit 0; NOS (bit 5) = inner
        // shareable.
        base | common | (1 << 6) | (1 << 5)
    } else {
        base | common | 1
    }
}

/// Programs `PRRR`/`NMRR` with the crate's memory-type slots and turns on TEX remap
/// (`SCTLR.TRE = 1`, `AFE = 0`), then invalidates this CPU's TLB (entries may hold the
/// old interpretation). Run once per CPU.
///
/// # Safety
/// Every live translation must mean the same thing before and after: true for tables built
/// by this crate and for entries written in plain TEX/C/B with `TEX[2:1] = 0` (see
/// [`crate::short::attrs`]); a kernel using other TEX/C/B codes must not call this while
/// they are live.
pub unsafe fn enable_tex_remap() {
    dsb_sy();
    PRRR.set(attrs::PRRR);
    NMRR.set(attrs::NMRR);
    isb();
    SCTLR.modify(SCTLR_BITS::TRE::SET + SCTLR_BITS::AFE::CLEAR);
    isb();
    tlbi::tlbiall(0);
    dsb_sy();
    isb();
}

/// Splits translation: VAs from `1 << (32 - n)` up are translated by the table at
/// `kernel_root` through `TTBR1`, the rest by `TTBR0` (`n = 0`: `TTBR0` for everything).
/// Invalidates this CPU's TLB afterwards, since entries cached through the other TTBR may
/// no longer match.
///
/// # Errors
/// [`ActivateError::InvalidSplit`] for `n > 7`; [`ActivateError::BadTableBase`] if
/// `kernel_root` is not a 16 KiB-aligned address below 4 GiB.
///
/// # Safety
/// The code, stack and data in use must be mapped identically before and after: through
/// `kernel_root` for VAs at or above the split, through the current `TTBR0` below.
pub unsafe fn set_split(n: u8, kernel_root: PhysAddr) -> Result<(), ActivateError> {
    if n > 7 {
        return Err(ActivateError::InvalidSplit(n));
    }
    if n > 0 && (!kernel_root.is_aligned(16384) || kernel_root.as_u64() >= 1 << 32) {
        return Err(ActivateError::BadTableBase(kernel_root));
    }
    dsb_ishst();
    if n > 0 {
        TTBR1.set(ttbr_value(kernel_root));
        isb();
    }
    TTBCR.modify(
        TTBCR_BITS::N.val(u32::from(n))
            + TTBCR_BITS::PD0::CLEAR
            + TTBCR_BITS::PD1::CLEAR
            + TTBCR_BITS::EAE::CLEAR,
    );
    isb();
    tlbi::tlbiall(0);
    dsb_sy();
    isb();
    Ok(())
}

/// Switches `TTBR0` to the table at `root` and the current ASID to `asid`, with the
/// architected sequence for short descriptors (ASID in `CONTEXTIDR`):
///
/// ```text
/// dsb ishst                     table writes visible to the walker
/// CONTEXTIDR.ASID = 0 ; isb     reserved ASID: no non-global entry can be created for
///                               `asid` from the old table
/// TTBR0 = root | attrs ; isb
/// CONTEXTIDR.ASID = asid ; isb
/// BPIALL ; isb                  branch predictor may hold targets of the old context
/// ```
///
/// ASID 0 is therefore reserved: no non-global mapping is ever used with it. No TLB flush
/// is needed when every non-global mapping of `root` is tagged with `asid` (the ASID
/// allocator guarantees a reused ASID is flushed first).
///
/// # Errors
/// [`ActivateError::ReservedAsid`] for ASID 0; [`ActivateError::BadTableBase`] if `root`
/// is above 4 GiB or not aligned to `16 KiB >> TTBCR.N`.
///
/// # Safety
/// Everything the CPU uses after the switch must be mapped identically by the new
/// context: below the split (all of it when `TTBCR.N = 0`) by `root`, above by `TTBR1`.
pub unsafe fn activate(root: PhysAddr, asid: Asid) -> Result<(), ActivateError> {
    if asid.0 == 0 {
        return Err(ActivateError::ReservedAsid);
    }
    let n = TTBCR.read(TTBCR_BITS::N);
    let align = (16384u64 >> n).max(128);
    if !root.is_aligned(align) || root.as_u64() >= 1 << 32 {
        return Err(ActivateError::BadTableBase(root));
    }
    dsb_ishst();
    CONTEXTIDR.modify(CONTEXTIDR_BITS::ASID.val(0));
    isb();
    TTBR0.set(ttbr_value(root));
    isb();
    CONTEXTIDR.modify(CONTEXTIDR_BITS::ASID.val(u32::from(asid.0)));
    isb();
    tlbi::bpiall(0);
    dsb_ish();
    isb();
    Ok(())
}

/// [`activate`] as an ASID allocator needs it ([`crate::asid`]): the allocator's owed
/// local invalidate folded into the sequence, and no ASID dance when the ASID does not
/// change.
///
/// ```text
/// same ASID as now, no flush owed:
///   TTBR0 already `root`: nothing at all
///   else: dsb ishst ; TTBR0 = root ; isb
/// otherwise:
///   dsb ishst
///   CONTEXTIDR.ASID = 0 ; isb       reserved ASID while the tables change
///   TTBR0 = root ; isb
///   [TLBIALL ; dsb nsh]             `flush_local_tlb`: after a rollover, before any ASID
///                                   of the new generation is used on this CPU
///   CONTEXTIDR.ASID = asid ; isb
///   BPIALL ; dsb ish ; isb
/// ```
///
/// The same-ASID shortcut is sound because every non-global entry this CPU holds under
/// `asid` then belongs to `root`'s space: either it is the space this CPU already runs
/// (another thread of the same process), or the CPU was parked (`TTBR0` on a table with
/// no non-global entries, ASID kept, as Linux does for lazy switches) and the ASID was
/// handed to `root`'s space after a broadcast invalidate of it (the teardown gather of the
/// previous owner, then [`crate::asid::AsidAllocator::release`]).
///
/// # Errors
/// As [`activate`].
///
/// # Safety
/// As [`activate`]; and no entry tagged `asid` in this CPU's TLB may belong to another
/// table than `root` unless `flush_local_tlb` is set (what the allocator guarantees).
pub unsafe fn switch_context(
    root: PhysAddr,
    asid: Asid,
    flush_local_tlb: bool,
) -> Result<(), ActivateError> {
    if asid.0 == 0 {
        return Err(ActivateError::ReservedAsid);
    }
    let n = TTBCR.read(TTBCR_BITS::N);
    let align = (16384u64 >> n).max(128);
    if !root.is_aligned(align) || root.as_u64() >= 1 << 32 {
        return Err(ActivateError::BadTableBase(root));
    }
    let ttbr = ttbr_value(root);
    if !flush_local_tlb && current_asid() == asid {
        if TTBR0.get() != ttbr {
            dsb_ishst();
            TTBR0.set(ttbr);
            isb();
        }
        return Ok(());
    }
    dsb_ishst();
    CONTEXTIDR.modify(CONTEXTIDR_BITS::ASID.val(0));
    isb();
    TTBR0.set(ttbr);
    isb();
    if flush_local_tlb {
        tlbi::tlbiall(0);
        super::barrier::dsb_nsh();
    }
    CONTEXTIDR.modify(CONTEXTIDR_BITS::ASID.val(u32::from(asid.0)));
    isb();
    tlbi::bpiall(0);
    dsb_ish();
    isb();
    Ok(())
}

/// The ASID in `CONTEXTIDR` now.
#[must_use]
pub fn current_asid() -> Asid {
    Asid(CONTEXTIDR.read(CONTEXTIDR_BITS::ASID) as u8)
}

/// Smallest data cache line (`CTR.DminLine`), in bytes.
fn dcache_line() -> usize {
    let ctr: u32;
    // SAFETY: reading the Cache Type Register has no side effects.
    unsafe {
        core::arch::asm!("mrc p15, 0, {0}, c0, c0, 1", out(reg) ctr,
            options(nomem, nostack, preserves_flags));
    }
    4 << ((ctr >> 16) & 0xf)
}

/// Cleans the data cache lines holding `[addr, addr + len)` to the point of unification
/// (`DCCMVAU`), so a non-coherent table walker sees descriptor writes there. Completion
/// needs a later `dsb` ([`publish_table_writes`] does it).
pub fn clean_dcache_to_pou(addr: usize, len: usize) {
    let line = dcache_line();
    let mut a = addr & !(line - 1);
    let end = addr.saturating_add(len);
    while a < end {
        // SAFETY: cleaning a line writes dirty data back; it changes no value and cannot
        // fault on a mapped address (the caller just wrote there).
        unsafe {
            core::arch::asm!("mcr p15, 0, {0}, c7, c11, 1", in(reg) a,
                options(nostack, preserves_flags));
        }
        a += line;
    }
}

/// After descriptor writes: a `dsb` makes them (and any cleans, when walks are not
/// coherent: a full `dsb ish`) complete for every walker in the inner shareable domain, and
/// an `isb` lets this CPU use new mappings at once.
pub fn publish_table_writes(coherent_walk: bool) {
    if coherent_walk {
        dsb_ishst();
    } else {
        dsb_ish();
    }
    isb();
}

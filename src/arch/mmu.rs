//! MMU set-up and context switching for short-descriptor tables
//! ([`crate::short::AddressSpace`]), and how descriptor writes reach the table walker.
//!
//! - [`bring_up`]: the MMU on over the kernel's table, from reset (every translation
//!   register, `DACR`, TEX remap, the TLB, branch predictor and instruction cache
//!   invalidated, then `SCTLR`);
//! - [`activate_root`]: a process's typed root into `TTBR0` with its ASID, checked against
//!   the live `TTBCR` (format, split) and `SCTLR.AFE`; [`activate`] is the raw form;
//! - [`detect_features`]: what the tables may use on this CPU;
//! - [`walk_attributes`] / [`ttbr_value`]: a table base with this core's walk attributes
//!   (shareable only on a core that takes part in coherency);
//! - [`enable_tex_remap`]: `PRRR`/`NMRR` from [`crate::short::attrs`], `SCTLR.TRE = 1`,
//!   `AFE = 0`;
//! - [`set_split`]: `TTBR1` + `TTBCR.N`;
//! - [`activate`]: the `TTBR0` + ASID switch of [`crate::arch::switch`] on this CPU, unchecked;
//!   [`switch_context`]: the same with an ASID allocator's owed local flush (see
//!   [`crate::asid`]); [`park`]: no user space;
//! - [`clean_dcache_for_walker`] / [`publish_table_writes`]: walk coherency, used by the
//!   address space after it writes descriptors.

use tock_registers::interfaces::{ReadWriteable, Readable, Writeable};

use super::barrier::{dsb_ish, dsb_ishst, dsb_sy, isb};
use super::context::Asid;
use super::cp15::{
    ACTLR, CONTEXTIDR, CONTEXTIDR_BITS, DACR, ID_MMFR0, ID_MMFR3, MAIR0, MAIR1, MIDR, MPIDR, NMRR,
    PRRR, SCTLR, SCTLR_BITS, TTBCR, TTBCR_BITS, TTBR0, TTBR0_64, TTBR1, TTBR1_64,
};
use super::error::ActivateError;
use super::features::short::Features;
use super::insn::Cp15;
use super::memattr as attrs;
use super::root::{check_live, MmuRegisters, RootFormat, TableRoot};
use super::switch::{park_short, switch_short, CleanLevel, ShortWalk, Switched};
use super::tlbi;
use crate::addr::PhysAddr;

/// Turns the MMU on over the kernel's short-descriptor table `kernel` (a whole-space table,
/// `TTBCR.N = 0`, or the kernel half of a split): the values of
/// [`MmuRegisters::short`], written in the architected order (`PRRR`/`NMRR` with the
/// crate's memory types, `DACR` with domain 0 a client and every other domain no access,
/// `TTBCR`, `TTBR1` = `TTBR0` = the kernel's table with this core's
/// [`walk_attributes`], ASID 0; `isb`; `TLBIALL`, `BPIALL`, `ICIALLU`, `dsb`, `isb`), then
/// `SCTLR` with `M`, `C`, `I`, `Z` and `TRE` set and `AFE` clear (the crate's access
/// permissions are written for `AFE = 0`), then `dsb`, `isb`. With a split, `TTBR0` is left
/// parked (`TTBCR.PD0 = 1`): nothing below the split translates until a process is
/// activated ([`activate_root`]). Run once per CPU, each on its own.
///
/// # Errors
/// As [`MmuRegisters::short`], before anything is written: the MMU is already on, the root
/// is not a short-descriptor kernel root, or not 16 KiB-aligned below 4 GiB.
///
/// # Safety
/// - The MMU is off on this CPU and its data cache holds nothing stale for the tables (on
///   hardware with data caches: invalidated, by set/way, since reset; the crate does no
///   set/way maintenance; QEMU models no caches). `kernel` and every table it links are
///   written and stay valid for as long as they are in use.
/// - `kernel` maps, **identity (VA = PA)**, as Normal memory the CPU may execute from
///   where it runs code: the code of this function (the instruction after the `SCTLR`
///   write is fetched at the same address, now translated), everything the CPU executes
///   after it returns, the stack in use, and every address the kernel uses afterwards
///   (its data, its console). With a split all of these lie at or above the split: below
///   it nothing translates until a process table is activated.
/// - No exception is taken through a vector that is not mapped likewise.
pub unsafe fn bring_up(kernel: &TableRoot) -> Result<(), ActivateError> {
    let regs = MmuRegisters::short(
        kernel,
        walk_attributes().bits(),
        [attrs::PRRR, attrs::NMRR],
        SCTLR.get(),
    )?;
    // SAFETY: the caller's contract; `regs` were checked to be a short-descriptor kernel
    // root with the MMU off.
    unsafe { program_and_enable(&regs, false) };
    Ok(())
}

/// Writes `regs` in the order [`MmuRegisters`] documents and turns the MMU on: shared by
/// both formats (`long`: the 64-bit `TTBRn` and `MAIRn` instead of the 32-bit `TTBRn` and
/// `PRRR`/`NMRR`; `TTBCR.EAE`, in `regs.ttbcr`, is written before them).
///
/// # Safety
/// As [`bring_up`] (or `crate::arch::lpae::bring_up`); `regs` come from [`MmuRegisters`].
#[inline(never)]
pub(crate) unsafe fn program_and_enable(regs: &MmuRegisters, long: bool) {
    // Table writes (made with the MMU off, so uncached) complete before any walk.
    dsb_sy();
    let [attr0, attr1] = regs.mem_attrs;
    if long {
        MAIR0.set(attr0);
        MAIR1.set(attr1);
    } else {
        PRRR.set(attr0);
        NMRR.set(attr1);
    }
    DACR.set(regs.dacr);
    TTBCR.set(regs.ttbcr);
    isb();
    if long {
        TTBR1_64.set(regs.ttbr1);
        TTBR0_64.set(regs.ttbr0);
    } else {
        TTBR1.set(regs.ttbr1 as u32);
        TTBR0.set(regs.ttbr0 as u32);
    }
    CONTEXTIDR.set(regs.contextidr);
    isb();
    // Nothing cached from before (reset leaves TLB, branch predictor and instruction cache
    // contents UNKNOWN on some parts) may be used by the first translated fetch.
    tlbi::tlbiall(0);
    tlbi::bpiall(0);
    tlbi::iciallu(0);
    dsb_sy();
    isb();
    SCTLR.set(regs.sctlr);
    dsb_sy();
    isb();
}

/// Switches `TTBR0` to the process table `root` with `asid`, after checking `root` against
/// this CPU ([`TableRoot::check_ttbr0`] on the live `TTBCR` and `SCTLR`): the checked form
/// of [`activate`], which the address spaces' `activate` and the ASID allocator use.
///
/// # Errors
/// Before anything is written: [`ActivateError::FormatMismatch`] for a long-descriptor
/// root or with `TTBCR.EAE` set; [`ActivateError::WrongHalf`] for a kernel-half root;
/// [`ActivateError::SplitMismatch`] when the root's layout is not the live `TTBCR.N`;
/// [`ActivateError::AccessFlagEnabled`] with `SCTLR.AFE` set; then as [`activate`].
///
/// # Safety
/// As [`activate`].
pub unsafe fn activate_root(root: &TableRoot, asid: Asid) -> Result<(), ActivateError> {
    if root.format() != RootFormat::Short {
        return Err(ActivateError::FormatMismatch);
    }
    check_live(root)?;
    // SAFETY: the caller's contract; the root matches the live TTBCR.
    unsafe { activate(root.pa(), asid) }
}

/// The optional short-descriptor features of this CPU, from `ID_MMFR0`/`ID_MMFR3`.
#[must_use]
pub fn detect_features() -> Features {
    Features::from_id_regs(ID_MMFR0.get(), ID_MMFR3.get())
}

/// The walk attributes for this core: shareable walks only when it takes part in
/// coherency (multiprocessing extensions, and `ACTLR.SMP` on the parts that have it; see
/// [`super::switch::ShortWalk`]).
#[must_use]
pub fn walk_attributes() -> ShortWalk {
    ShortWalk::from_registers(MIDR.get(), MPIDR.get(), ACTLR.get())
}

/// `TTBR0`/`TTBR1` value for the table at `root` with this core's
/// [`walk_attributes`].
#[must_use]
pub fn ttbr_value(root: PhysAddr) -> u32 {
    super::switch::short_ttbr(root, walk_attributes())
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
/// `kernel_root` through `TTBR1`, the rest by `TTBR0`. With `n = 0` `TTBR0` translates
/// everything and `kernel_root` is the table `TTBR0` is *parked* on while the ASID changes
/// ([`crate::arch::switch`]): the kernel's own table, with global entries only (Linux's
/// `swapper_pg_dir`). Invalidates this CPU's TLB afterwards, since entries cached through
/// the other TTBR may no longer match.
///
/// # Errors
/// [`ActivateError::InvalidSplit`] for `n > 7`; [`ActivateError::BadTableBase`] if
/// `kernel_root` is not a 16 KiB-aligned address below 4 GiB.
///
/// # Safety
/// The code, stack and data in use must be mapped identically before and after: through
/// `kernel_root` for VAs at or above the split, through the current `TTBR0` below. With
/// `n = 0`, `kernel_root` maps identically everything the CPU uses while parked and holds
/// no non-global entry.
pub unsafe fn set_split(n: u8, kernel_root: PhysAddr) -> Result<(), ActivateError> {
    if n > 7 {
        return Err(ActivateError::InvalidSplit(n));
    }
    if !kernel_root.is_aligned(16384) || kernel_root.as_u64() >= 1 << 32 {
        return Err(ActivateError::BadTableBase(kernel_root));
    }
    dsb_ishst();
    TTBR1.set(ttbr_value(kernel_root));
    isb();
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

/// Switches `TTBR0` to the table at `root` and the current ASID to `asid`:
/// [`super::switch::switch_short`] on this CPU with its [`walk_attributes`] (`TTBR0`
/// parked while the ASID changes, the Cortex-A9 754322 barrier where `MIDR` says so,
/// branch predictor invalidated).
///
/// This is the raw form: `root` is an address, so nothing can check it against what the
/// table was built for. Only its alignment is checked, against the live `TTBCR.N`; a table
/// built for another split that happens to be aligned is loaded and walked with the wrong
/// index width. Prefer [`activate_root`] (or an address space's `activate`), which refuses
/// that with [`ActivateError::SplitMismatch`].
///
/// ASID 0 is never used for a mapping. No TLB flush is needed when every non-global
/// mapping of `root` is tagged with `asid` (the ASID allocator guarantees a reused ASID is
/// flushed first).
///
/// # Errors
/// As [`super::switch::switch_short`]: [`ActivateError::ReservedAsid`],
/// [`ActivateError::FormatMismatch`], [`ActivateError::BadTableBase`],
/// [`ActivateError::NoParkingTable`] (`TTBCR.N = 0` and no kernel table in `TTBR1`).
///
/// # Safety
/// - `root` is a short-descriptor table built for the live `TTBCR.N` (the VAs below
///   `1 << (32 - N)`, or all of them with `N = 0`), with non-global entries only below the
///   split, valid for as long as this CPU may walk it;
/// - `SCTLR.AFE = 0` (the crate's permission encodings assume it);
/// - as [`super::switch::switch_short`]: everything the CPU uses after the switch must be
///   mapped identically by the new context (below the split, or everywhere with `N = 0`, by
///   `root`; above by `TTBR1`), and with `N = 0` `TTBR1` holds the kernel's table (global
///   entries only, mapping what the CPU uses);
/// - no entry tagged `asid` in this CPU's TLB belongs to another table than `root`
///   unless this CPU last ran `asid` over another table (the switch flushes that case);
///   the ASID allocator ([`crate::asid`]) guarantees it for the ASIDs it hands out.
pub unsafe fn activate(root: PhysAddr, asid: Asid) -> Result<(), ActivateError> {
    // SAFETY: the caller's contract is switch_short's.
    unsafe { switch_context(root, asid, false) }.map(|_| ())
}

/// [`activate`] as an ASID allocator needs it ([`crate::asid`]): `flush_local_tlb` is the
/// allocator's owed local `TLBIALL`, done while `TTBR0` is parked. Nothing is written when
/// the CPU already runs `root` with `asid`; a CPU that last ran `asid` over another table
/// drops that table's entries (`TLBIASID`) before the switch completes.
///
/// # Errors
/// As [`activate`].
///
/// # Safety
/// As [`activate`].
pub unsafe fn switch_context(
    root: PhysAddr,
    asid: Asid,
    flush_local_tlb: bool,
) -> Result<Switched, ActivateError> {
    // SAFETY: the caller's contract is switch_short's; `Cp15` is this CPU.
    unsafe { switch_short(&mut Cp15, root, walk_attributes(), asid, flush_local_tlb) }
}

/// Parks this CPU's `TTBR0` ([`super::switch::park_short`]): no user space, ASID kept,
/// nothing below the split walked (`TTBR0` on `TTBR1`'s kernel table with `N = 0`). For a
/// CPU that is about to run kernel threads only, or before an address space it ran is
/// destroyed. Returns whether anything was written.
///
/// # Errors
/// As [`super::switch::park_short`].
///
/// # Safety
/// Nothing the CPU uses afterwards lies below the split (or, with `N = 0`, `TTBR1` maps
/// identically everything it uses).
pub unsafe fn park() -> Result<bool, ActivateError> {
    // SAFETY: the caller's contract; `Cp15` is this CPU.
    unsafe { park_short(&mut Cp15) }
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
/// (`DCCMVAU`). Completion needs a later `dsb` ([`publish_table_writes`] does it).
pub fn clean_dcache_to_pou(addr: usize, len: usize) {
    clean_lines(addr, len, CleanLevel::PoU);
}

/// Cleans the data cache lines holding `[addr, addr + len)` to where a non-coherent table
/// walker reads them ([`super::switch::DESCRIPTOR_CLEAN`]: the point of coherency,
/// `DCCMVAC`). Completion needs a later `dsb` ([`publish_table_writes`] does it).
pub fn clean_dcache_for_walker(addr: usize, len: usize) {
    clean_lines(addr, len, super::switch::DESCRIPTOR_CLEAN);
}

fn clean_lines(addr: usize, len: usize, level: CleanLevel) {
    let line = dcache_line();
    let mut a = addr & !(line - 1);
    let end = addr.saturating_add(len);
    while a < end {
        match level {
            // SAFETY: cleaning a line writes dirty data back; it changes no value and
            // cannot fault on a mapped address (the caller just wrote there).
            CleanLevel::PoU => unsafe {
                core::arch::asm!("mcr p15, 0, {0}, c7, c11, 1", in(reg) a,
                    options(nostack, preserves_flags));
            },
            // SAFETY: as above, to the point of coherency.
            CleanLevel::PoC => unsafe {
                core::arch::asm!("mcr p15, 0, {0}, c7, c10, 1", in(reg) a,
                    options(nostack, preserves_flags));
            },
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

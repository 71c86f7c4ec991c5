//! MMU set-up and context switching for long-descriptor tables
//! ([`crate::lpae::AddressSpace`]), and their single-copy-atomic descriptor store.
//!
//! - [`detect_features`]: whether the CPU has LPAE, and its walk coherency;
//! - [`store_descriptor`]: one `strd` of a 64-bit descriptor; [`load_descriptor`], one
//!   `ldrd` (for readers that run without the table lock);
//! - [`bring_up`]: the MMU on over the kernel's long-descriptor table, from reset;
//! - [`enable`]: `MAIR0`/`MAIR1` from [`crate::lpae::attrs`], `TTBR0` (+ ASID) and
//!   `TTBR1`, then `TTBCR.EAE = 1` with `T0SZ`, the walk attributes and `A1 = 0` (also over
//!   a live short-descriptor MMU);
//! - [`activate_root`]: a context switch to a typed root, checked against the live
//!   `TTBCR`; [`activate`], the raw form: one 64-bit `TTBR0` write (table and ASID
//!   together);
//! - [`current_asid`], [`ttbr_value`].

use tock_registers::interfaces::{Readable, Writeable};

use super::barrier::{dsb_sy, isb};
use super::context::Asid;
use super::cp15::{ID_MMFR0, ID_MMFR3, MAIR0, MAIR1, SCTLR, TTBCR, TTBCR_BITS, TTBR0_64, TTBR1_64};
use super::error::ActivateError;
use super::features::lpae::Features;
use super::insn::Cp15;
use super::memattr as attrs;
use super::root::{check_live, MmuRegisters, RootFormat, TableRoot};
use super::switch::{park_lpae, switch_lpae, Switched};
use super::tlbi;
use crate::addr::PhysAddr;

/// The long-descriptor features of this CPU, or `None` without LPAE.
#[must_use]
pub fn detect_features() -> Option<Features> {
    Features::from_id_regs(ID_MMFR0.get(), ID_MMFR3.get())
}

/// Turns the MMU on over the kernel's long-descriptor table `kernel` (a whole-space table,
/// `T0SZ = 0`, or the kernel half of a split): the values of [`MmuRegisters::lpae`]
/// (`MAIR0`/`MAIR1` with the crate's memory types; `DACR` domain 0 client, which long
/// descriptors ignore; `TTBCR` with `EAE = 1`, `T0SZ = n`, `T1SZ = 0`, `A1 = 0`, walks
/// write-back write-allocate and inner shareable on a core in coherency; `TTBR1` =
/// `TTBR0` = the kernel's table, ASID 0, `TTBR0` parked by `EPD0` with a split), then the
/// same invalidates and `SCTLR` write as `crate::arch::mmu::bring_up` (`TRE` and `AFE`
/// have no effect with long descriptors, which always have an access flag; the crate sets
/// `AF` in every leaf). Run once per CPU, each on its own.
///
/// # Errors
/// [`ActivateError::NoLpae`] on a CPU without LPAE; as [`MmuRegisters::lpae`], before
/// anything is written.
///
/// # Safety
/// As `crate::arch::mmu::bring_up`, with `kernel` a long-descriptor table: the MMU is off,
/// the data cache holds nothing stale, and `kernel` maps identity (VA = PA) the code of this
/// function, everything executed after it, the stack and every address used afterwards (at
/// or above the split when there is one).
pub unsafe fn bring_up(kernel: &TableRoot) -> Result<(), ActivateError> {
    if detect_features().is_none() {
        return Err(ActivateError::NoLpae);
    }
    let shareable = super::mmu::walk_attributes().shareable();
    let regs = MmuRegisters::lpae(kernel, shareable, [attrs::MAIR0, attrs::MAIR1], SCTLR.get())?;
    // SAFETY: the caller's contract; `regs` were checked to be a long-descriptor kernel
    // root with the MMU off, on a CPU with LPAE.
    unsafe { super::mmu::program_and_enable(&regs, true) };
    Ok(())
}

/// Switches `TTBR0` to the process table `root` with `asid`, after checking it against
/// this CPU ([`TableRoot::check_ttbr0`]: `TTBCR.EAE` set, `T0SZ` the root's split, not a
/// kernel-half root): the checked form of [`activate`].
///
/// # Errors
/// [`ActivateError::FormatMismatch`], [`ActivateError::WrongHalf`],
/// [`ActivateError::SplitMismatch`] before anything is written; then as [`activate`].
///
/// # Safety
/// As [`activate`].
pub unsafe fn activate_root(root: &TableRoot, asid: Asid) -> Result<(), ActivateError> {
    if root.format() != RootFormat::Lpae {
        return Err(ActivateError::FormatMismatch);
    }
    check_live(root)?;
    // SAFETY: the caller's contract; the root matches the live TTBCR.
    unsafe { activate(root.pa(), asid) }
}

/// Writes the 64-bit descriptor `v` at `p` with one `strd`, which LPAE makes single-copy
/// atomic for an 8-byte-aligned address: a table walker sees the old or the new value,
/// never one half of each.
///
/// # Safety
/// `p` is an 8-byte-aligned, writable descriptor of a table the caller owns.
#[inline(always)]
pub unsafe fn store_descriptor(p: *mut u64, v: u64) {
    // SAFETY: the caller guarantees `p` is aligned and writable. `strd` in A32 needs an
    // even/odd register pair, hence r2/r3; little-endian: the low word at the lower
    // address.
    unsafe {
        core::arch::asm!(
            "strd r2, r3, [{p}]",
            p = in(reg) p,
            in("r2") v as u32,
            in("r3") (v >> 32) as u32,
            options(nostack, preserves_flags)
        )
    }
}

/// Reads the 64-bit descriptor at `p` with one `ldrd`, which LPAE makes single-copy
/// atomic for an 8-byte-aligned address: a descriptor another CPU is storing with
/// [`store_descriptor`] is read whole, old or new.
///
/// # Safety
/// `p` is an 8-byte-aligned, readable descriptor of a live table.
#[inline(always)]
pub unsafe fn load_descriptor(p: *const u64) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller guarantees `p` is aligned and readable. `ldrd` in A32 needs an
    // even/odd register pair, hence r2/r3; little-endian: the low word at the lower
    // address.
    unsafe {
        core::arch::asm!(
            "ldrd r2, r3, [{p}]",
            p = in(reg) p,
            out("r2") lo,
            out("r3") hi,
            options(nostack, preserves_flags, readonly)
        )
    };
    u64::from(lo) | (u64::from(hi) << 32)
}

/// `TTBR0`/`TTBR1` value: the table base (bits \[39:x\]) and the ASID in bits \[55:48\].
#[must_use]
pub const fn ttbr_value(root: PhysAddr, asid: Asid) -> u64 {
    (root.as_u64() & 0xff_ffff_ffff) | (asid.0 as u64) << 48
}

/// A root table address `TTBRn` can hold with `TxSZ = tsz`: below 1 TiB and aligned to
/// `2^x` bytes (`x = 5 - tsz` for `tsz` 0 or 1, `14 - tsz` otherwise).
fn root_ok(root: PhysAddr, tsz: u8) -> bool {
    super::switch::lpae_root_ok(root, u32::from(tsz))
}

/// Switches translation to the long-descriptor format: `MAIR0`/`MAIR1`, `TTBR1` (for
/// `n > 0`: the table at `kernel_root` translates VAs from `1 << (32 - n)` up), `TTBR0`
/// (the table at `root` with `asid`), then `TTBCR` with `EAE = 1`, `T0SZ = n`,
/// `T1SZ = 0`, `A1 = 0` (ASID from `TTBR0`), walks inner and outer write-back
/// write-allocate and inner shareable, `EPD1` set when there is no split. Invalidates
/// this CPU's TLB and branch predictor afterwards (entries of the old format must go).
/// Run once per CPU.
///
/// The registers cannot change format one at a time under a live MMU (`TTBR0` written
/// first would be walked as a short-descriptor table, `TTBCR.EAE` set first would walk
/// the short table as long descriptors), so if the MMU is on, this turns it off
/// (`SCTLR.M = 0`) for the switch and back on after: the code, stack and data in use must
/// be identity-mapped (VA = PA) by both the old and the new tables.
///
/// # Errors
/// [`ActivateError::InvalidSplit`] for `n > 7`; [`ActivateError::BadTableBase`] for a
/// root table `TTBR0`/`TTBR1` cannot hold.
///
/// # Safety
/// The code, stack and data in use must be identity-mapped, with the same memory types,
/// before and after: through `root` below the split (everything when `n = 0`), through
/// `kernel_root` above. With the MMU off for a moment, data accesses are not cacheable: on
/// hardware with data caches the caller must have cleaned them (this crate does no
/// set/way maintenance; QEMU has no caches to clean). `PRRR`/`NMRR` are the registers
/// `MAIR0`/`MAIR1` replace, so nothing may rely on TEX remap afterwards.
pub unsafe fn enable(
    n: u8,
    root: PhysAddr,
    asid: Asid,
    kernel_root: PhysAddr,
) -> Result<(), ActivateError> {
    // SAFETY: the caller's contract, for `T0SZ = n`, `T1SZ = 0`.
    unsafe { enable_sizes(n, 0, root, asid, kernel_root) }
}

/// [`enable`] for a split made with `TTBCR.T1SZ` (`T0SZ = 0`, `T1SZ = t1sz`, in 1..=7):
/// `TTBR1` holds `kernel_root`, the table of the top `4 GiB >> t1sz` (a
/// `Layout::KernelHigh { t1sz }` space: Linux's LPAE 3G/1G split is `t1sz = 2`, the
/// kernel from `0xC000_0000`), `TTBR0` the table at `root` (a `Layout::UserLow { t1sz }`
/// space) with `asid`, for every VA below. Everything else as [`enable`].
///
/// # Errors
/// [`ActivateError::InvalidSplit`] for `t1sz` outside 1..=7;
/// [`ActivateError::BadTableBase`] for a root `TTBR0`/`TTBR1` cannot hold.
///
/// # Safety
/// As [`enable`], with the split at `4 GiB - (4 GiB >> t1sz)`.
pub unsafe fn enable_t1sz(
    t1sz: u8,
    root: PhysAddr,
    asid: Asid,
    kernel_root: PhysAddr,
) -> Result<(), ActivateError> {
    if t1sz == 0 {
        return Err(ActivateError::InvalidSplit(0));
    }
    // SAFETY: the caller's contract, for `T0SZ = 0`, `T1SZ = t1sz`.
    unsafe { enable_sizes(0, t1sz, root, asid, kernel_root) }
}

/// [`enable`] with `T0SZ = t0sz` and `T1SZ = t1sz` (at most one of them non-zero).
///
/// # Safety
/// As [`enable`].
unsafe fn enable_sizes(
    t0sz: u8,
    t1sz: u8,
    root: PhysAddr,
    asid: Asid,
    kernel_root: PhysAddr,
) -> Result<(), ActivateError> {
    if t0sz > 7 || t1sz > 7 {
        return Err(ActivateError::InvalidSplit(t0sz.max(t1sz)));
    }
    if !root_ok(root, t0sz) {
        return Err(ActivateError::BadTableBase(root));
    }
    if !root_ok(kernel_root, t1sz) {
        return Err(ActivateError::BadTableBase(kernel_root));
    }
    let split = t0sz > 0 || t1sz > 0;
    // Inner shareable walks only on a core that takes part in coherency (see
    // `super::switch::ShortWalk`: the same rule, Linux's TTB_FLAGS_SMP/UP).
    let sh = if super::mmu::walk_attributes().shareable() {
        3
    } else {
        0
    };
    dsb_sy();
    let sctlr = SCTLR.get();
    let mmu_on = sctlr & 1 != 0;
    if mmu_on {
        SCTLR.set(sctlr & !1);
        isb();
    }
    MAIR0.set(attrs::MAIR0);
    MAIR1.set(attrs::MAIR1);
    // Without a split TTBR1 translates nothing but is the table TTBR0 is parked on
    // (`super::switch::park_lpae`).
    TTBR1_64.set(ttbr_value(kernel_root, Asid(0)));
    TTBR0_64.set(ttbr_value(root, asid));
    isb();
    TTBCR.write(
        TTBCR_BITS::EAE::SET
            + TTBCR_BITS::T0SZ.val(u32::from(t0sz))
            + TTBCR_BITS::IRGN0::WriteBackWriteAllocate
            + TTBCR_BITS::ORGN0::WriteBackWriteAllocate
            + TTBCR_BITS::SH0.val(sh)
            + TTBCR_BITS::T1SZ.val(u32::from(t1sz))
            + TTBCR_BITS::IRGN1.val(1)
            + TTBCR_BITS::ORGN1.val(1)
            + TTBCR_BITS::SH1.val(sh)
            + TTBCR_BITS::A1::CLEAR
            + TTBCR_BITS::EPD1.val(u32::from(!split)),
    );
    isb();
    tlbi::tlbiall(0);
    tlbi::bpiall(0);
    dsb_sy();
    isb();
    if mmu_on {
        SCTLR.set(sctlr);
        isb();
    }
    Ok(())
}

/// Switches `TTBR0` to the table at `root` and the current ASID to `asid` in one 64-bit
/// register write (with `TTBCR.A1 = 0` the ASID is part of `TTBR0`, so no walk can see the
/// new table with the old ASID or the reverse): [`super::switch::switch_lpae`] on this
/// CPU, without an owed flush.
///
/// # Errors
/// As [`super::switch::switch_lpae`].
///
/// This is the raw form: only `root`'s alignment is checked, against the live `T0SZ`;
/// prefer [`activate_root`], which also refuses a table built for another split.
///
/// # Safety
/// [`enable`] or [`bring_up`] has run on this CPU; `root` is a long-descriptor table built
/// for the live `T0SZ` (non-global entries only below the split), valid while this CPU may
/// walk it; everything the CPU uses after the switch must be mapped identically by the new
/// context; and no entry tagged `asid` in this CPU's TLB belongs to another table than
/// `root` unless this CPU last ran `asid` over another table (the switch flushes that case).
pub unsafe fn activate(root: PhysAddr, asid: Asid) -> Result<(), ActivateError> {
    // SAFETY: the caller's contract is switch_lpae's.
    unsafe { switch_context(root, asid, false) }.map(|_| ())
}

/// [`activate`] with an ASID allocator's owed local flush ([`crate::asid`]), done while
/// `TTBR0` is parked (`EPD0`) so nothing refills during it (with `T0SZ = 0`: right after the
/// `TTBR0` write).
///
/// # Errors
/// As [`super::switch::switch_lpae`].
///
/// # Safety
/// As [`activate`]; and no entry tagged `asid` in this CPU's TLB belongs to another table
/// than `root` unless `flush_local_tlb` is set.
pub unsafe fn switch_context(
    root: PhysAddr,
    asid: Asid,
    flush_local_tlb: bool,
) -> Result<Switched, ActivateError> {
    // SAFETY: the caller's contract; `Cp15` is this CPU.
    unsafe { switch_lpae(&mut Cp15, root, asid, flush_local_tlb) }
}

/// Parks this CPU's `TTBR0` ([`super::switch::park_lpae`]): no user space, ASID kept.
///
/// # Errors
/// As [`super::switch::park_lpae`].
///
/// # Safety
/// Nothing the CPU uses afterwards lies below the split (or, with `T0SZ = 0`, `TTBR1` maps
/// identically everything it uses).
pub unsafe fn park() -> Result<bool, ActivateError> {
    // SAFETY: the caller's contract; `Cp15` is this CPU.
    unsafe { park_lpae(&mut Cp15) }
}

/// The ASID in `TTBR0` now (long-descriptor format, `TTBCR.A1 = 0`).
#[must_use]
pub fn current_asid() -> Asid {
    Asid((TTBR0_64.get() >> 48) as u8)
}

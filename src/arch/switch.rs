//! The context switch of `TTBR0` and the ASID, for both descriptor formats, as programs
//! that run on any [`SysRegs`]: the CPU itself (`Cp15`, ARM only) or the host CPU model
//! (`tlb::cpu_model`, feature `tlb-model`), which executes the very same instructions
//! against a TLB with ASID-tagged walk caches and speculative walks between instructions.
//!
//! # The hazard
//!
//! A CPU may start a table walk at any moment (speculation), for any VA, through whatever
//! `TTBR0` is current, and tags what it caches (leaf entries *and* walk-cache entries for
//! the tables it went through) with whatever ASID is current. With short descriptors the
//! table (`TTBR0`) and the ASID (`CONTEXTIDR`) are two registers, written by two
//! instructions: between them, the new table is walked under the old ASID or the old table
//! under the new one, and the entries created there belong to the wrong address space
//! (Arm ARM, "Synchronization of changes of ASID and TTBR").
//!
//! # Parking `TTBR0`
//!
//! The crate does what Linux's 2-level ARM code does (`arch/arm/mm/context.c`,
//! `cpu_set_reserved_ttbr0`, then `cpu_v7_switch_mm` in `proc-v7-2level.S`): before either
//! register changes, `TTBR0` is *parked*, so that no walk can go through any process's
//! tables while the ASID changes:
//!
//! - with a split (`TTBCR.N > 0`, or LPAE `T0SZ > 0` or `T1SZ > 0`): `TTBCR.PD0 = 1` (LPAE: `EPD0 = 1`).
//!   A TLB miss below the split then faults without a walk (Arm ARM, `TTBCR`, in both
//!   formats). That is exactly what an empty table gives (no walk can
//!   load anything through it) without spending a table or needing one aligned for every
//!   `N`; entries already cached still hit, as they would with an empty table;
//! - without a split (`N = 0`: `TTBR0` translates the kernel too): `TTBR0 = TTBR1`. The
//!   kernel loads `TTBR1` with its own table, which holds only global kernel mappings (Linux's
//!   `swapper_pg_dir`; `crate::arch::mmu::set_split` with `n = 0` does it). Walks through it
//!   create only the kernel's global entries, the same for every process.
//!
//! Then the ASID changes, then the new table is installed and the walks are enabled again,
//! each step completed by an `isb` (a register write is only guaranteed to be seen by walks
//! after a context synchronization; two writes before one `isb` may take effect in either
//! order, so `TTBR0` and the un-parking are two steps). No walk ever happens through a
//! process's tables under another ASID, so every entry a process's tables produce is tagged
//! with that process's ASID. That is what lets the gather use ASID-tagged invalidates for
//! freed tables and one `TLBIASID` for a teardown ([`crate::gather`]): nothing is tagged
//! with a reserved ASID. (The earlier reserved-ASID method, ASID 0 while `TTBR0` changes,
//! cached every process's leaf and table entries under ASID 0; the Cortex-A15 TRM allows it
//! only when every VA has the same mapping size in old and new tables.)
//!
//! # The programs
//!
//! Short descriptors ([`switch_short`]):
//!
//! ```text
//! same ASID, no flush owed, TTBR0 already the table: nothing
//! dsb ishst                         table writes visible to the walker
//! park ; isb                        TTBCR.PD0 = 1 (N > 0) or TTBR0 = TTBR1 (N = 0)
//! [TLBIALL ; dsb nsh]               owed after an ASID rollover (crate::asid)
//! [TLBIASID asid ; dsb nsh]         same ASID last used over another table (its walk-cache
//!                                   and leaf entries are tagged with this ASID); with
//!                                   PD0 parking TTBR0 still names that table
//! [dsb sy]                          Cortex-A9 754322: a walk in flight may complete after
//!                                   the CONTEXTIDR write and be tagged with the new ASID
//! CONTEXTIDR.ASID = asid ; isb      only if it changes
//! TTBR0 = root | walk attrs ; isb
//! [TTBCR.PD0 = 0 ; isb]             N > 0
//! BPIALL ; dsb nsh ; isb            the translation changed (ARMv7 requires branch
//!                                   predictor maintenance when it changes without an ASID
//!                                   change, Arm ARM B2.2.6; Linux's hardened switch on
//!                                   A8/A9/A12/A17 does it on every switch)
//! ```
//!
//! LPAE ([`switch_lpae`]): `TTBR0` carries the ASID (`TTBCR.A1 = 0`), so one 64-bit write
//! switches both and no walk can see one without the other. Parking is needed only around
//! a local flush, so that nothing refills from any table while it runs:
//!
//! ```text
//! same ASID, no flush owed, TTBR0 already the table: nothing
//! dsb ishst
//! [EPD0 = 1 ; isb ; TLBIALL or TLBIASID ; dsb nsh]      a split, a flush owed  
//! [TLBIALL ; dsb nsh]                                   no split, rollover flush owed
//! TTBR0 = root | asid << 48 ; isb
//! [EPD0 = 0 ; isb]
//! [TLBIASID asid ; dsb nsh ; isb]                       no split, same ASID, other table
//! BPIALL ; dsb nsh ; isb
//! ```
//!
//! [`park_short`] / [`park_lpae`] put a CPU in the parked state on their own: "no user
//! space" (before a `destroy`, or for a kernel thread), without a second address space and
//! without spending an ASID. A later switch un-parks.
//!
//! # Hazards and their tests
//!
//! See [`crate::hazards`] for every silicon hazard, its source, the code here that
//! handles it and the host-model test that catches the old sequence.

use super::context::Asid;
use super::cpu::{a9_754322_affected, ActlrBits, MainId};
use super::error::ActivateError;
use super::insn::{Insn, SysReg, SysRegs};
use crate::addr::PhysAddr;

/// `TTBCR.PD0` (short descriptors).
const PD0: u32 = 1 << 4;
/// `TTBCR.EPD0` (long descriptors).
const EPD0: u32 = 1 << 7;
/// `TTBCR.T0SZ` (bits \[2:0\]) and `TTBCR.T1SZ` (bits \[18:16\]): either set is a split.
const TXSZ_BOTH: u32 = 7 | 7 << 16;
/// `TTBCR.EAE`.
const EAE: u32 = 1 << 31;
/// Table base bits of a 32-bit `TTBRn` for `N = 0` (16 KiB alignment).
const SHORT_BASE_N0: u32 = !0x3fff;
/// Table base bits of a 64-bit `TTBRn` (bits \[39:0\]; low bits by `TxSZ`).
const LPAE_BASE: u64 = 0xff_ffff_ffff;

/// What a switch did (the model tests and kernels' statistics read it).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
#[must_use]
pub struct Switched {
    /// Anything was written at all (false: the CPU already ran this table and ASID).
    pub changed: bool,
    /// The ASID changed.
    pub asid_changed: bool,
    /// The owed local `TLBIALL` was issued.
    pub flushed_local: bool,
    /// A local `TLBIASID` dropped entries that the ASID had from another table.
    pub foreign_entries_dropped: bool,
}

/// The walk attributes in the low bits of a short-descriptor `TTBRn`.
///
/// Which to use is a property of the core and its configuration, not of the table: a
/// shareable walk (`S = 1`) is right when the core takes part in coherency (the
/// multiprocessing extensions, and `ACTLR.SMP = 1` on the Cortex-A5/A7/A9/A15); on a core
/// without them, or with `ACTLR.SMP = 0`, Shareable Normal memory is treated as
/// non-cacheable, so an `S = 1` walk would read memory behind the data cache. Linux's
/// `TTB_FLAGS_SMP` / `TTB_FLAGS_UP` (`arch/arm/mm/proc-v7-2level.S`) make the same choice.
/// [`ShortWalk::for_core`] picks one.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ShortWalk(u32);

impl ShortWalk {
    /// Inner write-back write-allocate (`IRGN = 01`: bit 6 set, bit 0 clear), outer
    /// write-back write-allocate (`RGN = 01`), shareable (`S`), inner shareable (`NOS`):
    /// `0x6a`, Linux's `TTB_FLAGS_SMP`.
    pub const SMP: ShortWalk = ShortWalk((1 << 6) | (1 << 5) | (0b01 << 3) | (1 << 1));
    /// Multiprocessing-extensions encoding of IRGN (bits 6 and 0), not shareable: inner and
    /// outer write-back no write-allocate, `0x59`, Linux's `TTB_FLAGS_UP` (an MP-capable
    /// core running uniprocessor, e.g. with `ACTLR.SMP = 0`).
    pub const UP_MP: ShortWalk = ShortWalk((1 << 6) | (0b11 << 3) | 1);
    /// A core without the multiprocessing extensions: bit 0 is plain "inner cacheable",
    /// outer write-back no write-allocate, not shareable (`0x19`).
    pub const UP: ShortWalk = ShortWalk((0b11 << 3) | 1);

    /// The attributes for a core: `mp_extensions` (`MPIDR.MP`, bit 31) and `coherent`
    /// (the core takes part in coherency: `ACTLR.SMP` on parts that have it, see
    /// [`crate::tlb::select`]).
    #[must_use]
    pub const fn for_core(mp_extensions: bool, coherent: bool) -> ShortWalk {
        match (mp_extensions, coherent) {
            (true, true) => ShortWalk::SMP,
            (true, false) => ShortWalk::UP_MP,
            (false, _) => ShortWalk::UP,
        }
    }

    /// The attributes for a core from its registers: `MPIDR.MP` (bit 31) says whether it
    /// has the multiprocessing extensions; on the parts whose `ACTLR` the crate knows
    /// ([`crate::tlb::select::ActlrBits::for_part`]: Cortex-A5/A7/A9/A12/A15/A17,
    /// Brahma-B15) `ACTLR.SMP` (bit 6) says whether it takes part in coherency, on other
    /// parts `MPIDR.U` (bit 30, uniprocessor) clear does.
    #[must_use]
    pub fn from_registers(midr: u32, mpidr: u32, actlr: u32) -> ShortWalk {
        let mp = mpidr & (1 << 31) != 0;
        let has_smp_bit = ActlrBits::for_part(MainId::from_midr(midr)).is_some();
        let coherent = if has_smp_bit {
            actlr & (1 << 6) != 0
        } else {
            mpidr & (1 << 30) == 0
        };
        ShortWalk::for_core(mp, coherent)
    }

    /// The low `TTBRn` bits.
    #[must_use]
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether walks are to shareable memory (`S`).
    #[must_use]
    pub const fn shareable(self) -> bool {
        self.0 & (1 << 1) != 0
    }
}

/// How far a descriptor write is cleaned for a table walker that is not coherent with the
/// data cache (`ID_MMFR3.CohWalk = 0`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CleanLevel {
    /// To the point of unification (`DCCMVAU`).
    PoU,
    /// To the point of coherency (`DCCMVAC`), as Linux's UP `cpu_v7_set_pte_ext` does.
    PoC,
}

/// Where the crate cleans descriptor writes when walks are not coherent: the point of
/// coherency, which every walker reads through whatever its attributes (an `S = 1` walk
/// on a core outside coherency reads memory; see `tlb::cpu_model::WalkCoherence` for the
/// model that checks the choice).
pub const DESCRIPTOR_CLEAN: CleanLevel = CleanLevel::PoC;

/// The 32-bit `TTBRn` value for the table at `root` (below 4 GiB) with `walk`.
#[must_use]
pub const fn short_ttbr(root: PhysAddr, walk: ShortWalk) -> u32 {
    (root.as_u64() as u32 & !0x7f) | walk.0
}

/// The 64-bit `TTBR0` value for the table at `root` with `asid` (`TTBCR.A1 = 0`).
#[must_use]
pub const fn lpae_ttbr(root: PhysAddr, asid: Asid) -> u64 {
    (root.as_u64() & LPAE_BASE) | (asid.0 as u64) << 48
}

/// The mistakes the model tests switch on to show they catch them (the crate never uses
/// anything but [`Variant::Correct`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(not(all(test, feature = "tlb-model")), allow(dead_code))]
pub(crate) enum Variant {
    /// The sequences in the module docs.
    Correct,
    /// The old short-descriptor switch: `CONTEXTIDR = 0`, `TTBR0`, `CONTEXTIDR = asid`,
    /// with no parking.
    ReservedAsid,
    /// Same ASID: only rewrite `TTBR0` (no parking, no `TLBIASID`, no `BPIALL`).
    BareSameAsid,
    /// No `dsb sy` before the `CONTEXTIDR` write on a 754322-affected Cortex-A9.
    No754322Barrier,
    /// Un-park and install the table in one step (`TTBR0` and `TTBCR` before one `isb`).
    OneIsb,
}

/// Whether `root` is a short-descriptor `TTBR0` table for `TTBCR.N = n`.
fn short_root_ok(root: PhysAddr, n: u32) -> bool {
    let align = (16384u64 >> n).max(128);
    root.is_aligned(align) && root.as_u64() < 1 << 32
}

/// Whether `root` is a table `TTBRn` can hold with `TxSZ = tsz` (long descriptors): below
/// 1 TiB and aligned to `2^x` bytes (`x = 5 - tsz` for `tsz` 0 or 1, `14 - tsz` otherwise).
pub(crate) fn lpae_root_ok(root: PhysAddr, tsz: u32) -> bool {
    let x = if tsz <= 1 { 5 - tsz } else { 14 - tsz };
    root.is_aligned(1 << x) && root.as_u64() < 1 << 40
}

/// Switches `TTBR0` to the short-descriptor table at `root` with walk attributes `walk`
/// and the ASID to `asid`, parking `TTBR0` while the ASID changes (see the module docs).
/// `flush_local` asks for the local `TLBIALL` an ASID allocator owes after a rollover
/// ([`crate::asid::Switch::flush_local_tlb`]).
///
/// # Errors
/// Nothing is written when one is returned:
/// [`ActivateError::ReservedAsid`] for ASID 0; [`ActivateError::FormatMismatch`] if
/// `TTBCR.EAE` is set (the CPU walks long descriptors); [`ActivateError::BadTableBase`] if
/// `root` is above 4 GiB or not aligned to `16 KiB >> TTBCR.N`;
/// [`ActivateError::NoParkingTable`] with `TTBCR.N = 0` if `TTBR1` holds no table (base 0).
///
/// # Safety
/// When `cpu` is this CPU: everything it uses after the switch must be mapped identically
/// by the new context (below the split, or everywhere with `N = 0`, by `root`; above by
/// `TTBR1`); with `N = 0`, `TTBR1` holds a table that maps identically everything the CPU
/// uses while parked and has no non-global entries; no entry tagged `asid` in this CPU's
/// TLB belongs to another table than `root` unless `flush_local` is set or this CPU last
/// ran `asid` over another table (both of which the program flushes).
pub unsafe fn switch_short<S: SysRegs>(
    cpu: &mut S,
    root: PhysAddr,
    walk: ShortWalk,
    asid: Asid,
    flush_local: bool,
) -> Result<Switched, ActivateError> {
    switch_short_variant(cpu, root, walk, asid, flush_local, Variant::Correct)
}

pub(crate) fn switch_short_variant<S: SysRegs>(
    cpu: &mut S,
    root: PhysAddr,
    walk: ShortWalk,
    asid: Asid,
    flush_local: bool,
    variant: Variant,
) -> Result<Switched, ActivateError> {
    if asid.0 == 0 {
        return Err(ActivateError::ReservedAsid);
    }
    let ttbcr = cpu.read(SysReg::Ttbcr) as u32;
    if ttbcr & EAE != 0 {
        return Err(ActivateError::FormatMismatch);
    }
    let n = ttbcr & 7;
    if !short_root_ok(root, n) {
        return Err(ActivateError::BadTableBase(root));
    }
    // Only without a split is `TTBR1` the parking table.
    let ttbr1 = if n == 0 {
        cpu.read(SysReg::Ttbr1) as u32
    } else {
        0
    };
    if n == 0 && ttbr1 & SHORT_BASE_N0 == 0 {
        return Err(ActivateError::NoParkingTable);
    }
    let ttbr0 = cpu.read(SysReg::Ttbr0) as u32;
    let contextidr = cpu.read(SysReg::Contextidr) as u32;
    let new_ttbr = short_ttbr(root, walk);
    let same_asid = contextidr & 0xff == u32::from(asid.0);
    let parked = if n > 0 {
        ttbcr & PD0 != 0
    } else {
        ttbr0 & SHORT_BASE_N0 == ttbr1 & SHORT_BASE_N0
    };
    let on_root = !parked && ttbr0 == new_ttbr;
    if !flush_local && same_asid && on_root {
        return Ok(Switched::default());
    }
    let with_asid = |asid: u8| (contextidr & !0xff) | u32::from(asid);
    let mut done = Switched {
        changed: true,
        asid_changed: !same_asid,
        ..Switched::default()
    };
    cpu.issue(Insn::DsbIshst);
    match variant {
        Variant::ReservedAsid => {
            cpu.issue(Insn::SetContextidr(with_asid(0)));
            cpu.issue(Insn::Isb);
            cpu.issue(Insn::SetTtbr0(new_ttbr));
            cpu.issue(Insn::Isb);
            if flush_local {
                cpu.issue(Insn::Tlbiall);
                cpu.issue(Insn::DsbNsh);
                done.flushed_local = true;
            }
            cpu.issue(Insn::SetContextidr(with_asid(asid.0)));
            cpu.issue(Insn::Isb);
            branch_predictor(cpu);
            return Ok(done);
        }
        Variant::BareSameAsid if same_asid && !flush_local => {
            cpu.issue(Insn::SetTtbr0(new_ttbr));
            cpu.issue(Insn::Isb);
            return Ok(done);
        }
        _ => {}
    }
    if !parked {
        cpu.issue(if n > 0 {
            Insn::SetTtbcr(ttbcr | PD0)
        } else {
            Insn::SetTtbr0(ttbr1)
        });
        cpu.issue(Insn::Isb);
    }
    // The ASID was last used over another table: with `PD0` parking `TTBR0` still says
    // which (parked on `TTBR1`, `N = 0`, the contract says it was `root`).
    let foreign = same_asid
        && (if n > 0 {
            ttbr0 != new_ttbr
        } else {
            !parked && !on_root
        });
    if flush_local {
        cpu.issue(Insn::Tlbiall);
        done.flushed_local = true;
    } else if foreign {
        cpu.issue(Insn::Tlbiasid(asid.0));
        done.foreign_entries_dropped = true;
    }
    if flush_local || foreign {
        cpu.issue(Insn::DsbNsh);
    }
    if !same_asid {
        let midr = cpu.read(SysReg::Midr) as u32;
        if a9_754322_affected(midr) && variant != Variant::No754322Barrier {
            cpu.issue(Insn::DsbSy);
        }
        cpu.issue(Insn::SetContextidr(with_asid(asid.0)));
        cpu.issue(Insn::Isb);
    }
    cpu.issue(Insn::SetTtbr0(new_ttbr));
    if n > 0 {
        if variant != Variant::OneIsb {
            cpu.issue(Insn::Isb);
        }
        cpu.issue(Insn::SetTtbcr(ttbcr & !PD0));
    }
    cpu.issue(Insn::Isb);
    branch_predictor(cpu);
    Ok(done)
}

/// `BPIALL ; dsb nsh ; isb`.
fn branch_predictor<S: SysRegs>(cpu: &mut S) {
    cpu.issue(Insn::Bpiall);
    cpu.issue(Insn::DsbNsh);
    cpu.issue(Insn::Isb);
}

/// Parks this CPU's `TTBR0` (short descriptors): from here on nothing below the split is
/// walked (`N > 0`: `TTBCR.PD0 = 1`), or only the kernel's table in `TTBR1` (`N = 0`:
/// `TTBR0 = TTBR1`). The ASID stays; the next [`switch_short`] un-parks. Returns `false`
/// (and writes nothing) if the CPU was parked already.
///
/// # Errors
/// [`ActivateError::FormatMismatch`] with `TTBCR.EAE` set; [`ActivateError::NoParkingTable`]
/// with `N = 0` and no table in `TTBR1`.
///
/// # Safety
/// When `cpu` is this CPU: nothing it uses after the call lies below the split (`N > 0`),
/// or `TTBR1` maps identically everything it uses and holds no non-global entry (`N = 0`).
pub unsafe fn park_short<S: SysRegs>(cpu: &mut S) -> Result<bool, ActivateError> {
    let ttbcr = cpu.read(SysReg::Ttbcr) as u32;
    if ttbcr & EAE != 0 {
        return Err(ActivateError::FormatMismatch);
    }
    let n = ttbcr & 7;
    let ttbr1 = cpu.read(SysReg::Ttbr1) as u32;
    if n == 0 {
        if ttbr1 & SHORT_BASE_N0 == 0 {
            return Err(ActivateError::NoParkingTable);
        }
        let ttbr0 = cpu.read(SysReg::Ttbr0) as u32;
        if ttbr0 & SHORT_BASE_N0 == ttbr1 & SHORT_BASE_N0 {
            return Ok(false);
        }
        cpu.issue(Insn::SetTtbr0(ttbr1));
    } else {
        if ttbcr & PD0 != 0 {
            return Ok(false);
        }
        cpu.issue(Insn::SetTtbcr(ttbcr | PD0));
    }
    cpu.issue(Insn::Isb);
    branch_predictor(cpu);
    Ok(true)
}

/// Switches `TTBR0` to the long-descriptor table at `root` and the ASID to `asid` in one
/// 64-bit write, with the owed local flush done while nothing can refill (see the module
/// docs). ASID 0 is allowed (LPAE does not need a reserved ASID) but the crate's
/// allocator never hands it out.
///
/// # Errors
/// Nothing is written when one is returned: [`ActivateError::FormatMismatch`] if
/// `TTBCR.EAE` is clear; [`ActivateError::BadTableBase`] if `TTBR0` cannot hold `root` with
/// the current `T0SZ`.
///
/// # Safety
/// As [`switch_short`], for the long-descriptor tables.
pub unsafe fn switch_lpae<S: SysRegs>(
    cpu: &mut S,
    root: PhysAddr,
    asid: Asid,
    flush_local: bool,
) -> Result<Switched, ActivateError> {
    let ttbcr = cpu.read(SysReg::Ttbcr) as u32;
    if ttbcr & EAE == 0 {
        return Err(ActivateError::FormatMismatch);
    }
    let t0sz = ttbcr & 7;
    // A split (`T0SZ > 0`, or `T1SZ > 0` with `T0SZ = 0`: the kernel's part above
    // `TTBR0`'s) parks with `EPD0`; only without one does `TTBR0` park on `TTBR1`'s table.
    let split = ttbcr & TXSZ_BOTH != 0;
    if !lpae_root_ok(root, t0sz) {
        return Err(ActivateError::BadTableBase(root));
    }
    let ttbr0 = cpu.read(SysReg::Ttbr0Lpae);
    let ttbr1 = cpu.read(SysReg::Ttbr1Lpae);
    let new_ttbr = lpae_ttbr(root, asid);
    let same_asid = (ttbr0 >> 48) as u8 == asid.0;
    let parked = if split {
        ttbcr & EPD0 != 0
    } else {
        ttbr1 & LPAE_BASE != 0 && ttbr0 & LPAE_BASE == ttbr1 & LPAE_BASE
    };
    let on_root = !parked && ttbr0 == new_ttbr;
    if !flush_local && on_root {
        return Ok(Switched::default());
    }
    // As for short descriptors: `EPD0` parking keeps `TTBR0`, which says whose entries
    // the ASID holds.
    let foreign = same_asid
        && (if split {
            ttbr0 != new_ttbr
        } else {
            !parked && !on_root
        });
    let flush = if flush_local {
        Some(Insn::Tlbiall)
    } else if foreign {
        Some(Insn::Tlbiasid(asid.0))
    } else {
        None
    };
    let done = Switched {
        changed: true,
        asid_changed: !same_asid,
        flushed_local: flush_local,
        foreign_entries_dropped: !flush_local && foreign,
    };
    cpu.issue(Insn::DsbIshst);
    // Where the flush goes: while parked (a split); otherwise a rollover's `TLBIALL`
    // before the write (what the old table refills in the gap is tagged with the running
    // space's ASID, which the allocator keeps reserved for it, as Linux's LPAE
    // `check_and_switch_context` relies on) and a foreign-entries `TLBIASID` after it
    // (before it, the old table would refill under the very ASID being cleaned).
    let mut parked_now = parked;
    let mut flush_after = None;
    if let Some(op) = flush {
        if split {
            if !parked_now {
                cpu.issue(Insn::SetTtbcr(ttbcr | EPD0));
                cpu.issue(Insn::Isb);
                parked_now = true;
            }
            cpu.issue(op);
            cpu.issue(Insn::DsbNsh);
        } else if flush_local {
            cpu.issue(op);
            cpu.issue(Insn::DsbNsh);
        } else {
            flush_after = Some(op);
        }
    }
    cpu.issue(Insn::SetTtbr0Lpae(new_ttbr));
    cpu.issue(Insn::Isb);
    if split && parked_now {
        cpu.issue(Insn::SetTtbcr(ttbcr & !EPD0));
        cpu.issue(Insn::Isb);
    }
    if let Some(op) = flush_after {
        cpu.issue(op);
        cpu.issue(Insn::DsbNsh);
        cpu.issue(Insn::Isb);
    }
    branch_predictor(cpu);
    Ok(done)
}

/// Parks this CPU's `TTBR0` (long descriptors): `TTBCR.EPD0 = 1` with a split
/// (`T0SZ > 0` or `T1SZ > 0`), `TTBR0 = TTBR1`'s table (ASID kept) without one. Returns `false` (and
/// writes nothing) if it was parked already.
///
/// # Errors
/// [`ActivateError::FormatMismatch`] with `TTBCR.EAE` clear;
/// [`ActivateError::NoParkingTable`] with no split (`T0SZ = T1SZ = 0`) and no table in `TTBR1`.
///
/// # Safety
/// As [`park_short`].
pub unsafe fn park_lpae<S: SysRegs>(cpu: &mut S) -> Result<bool, ActivateError> {
    let ttbcr = cpu.read(SysReg::Ttbcr) as u32;
    if ttbcr & EAE == 0 {
        return Err(ActivateError::FormatMismatch);
    }
    if ttbcr & TXSZ_BOTH != 0 {
        if ttbcr & EPD0 != 0 {
            return Ok(false);
        }
        cpu.issue(Insn::SetTtbcr(ttbcr | EPD0));
    } else {
        let ttbr1 = cpu.read(SysReg::Ttbr1Lpae);
        if ttbr1 & LPAE_BASE == 0 {
            return Err(ActivateError::NoParkingTable);
        }
        let ttbr0 = cpu.read(SysReg::Ttbr0Lpae);
        if ttbr0 & LPAE_BASE == ttbr1 & LPAE_BASE {
            return Ok(false);
        }
        cpu.issue(Insn::SetTtbr0Lpae(
            (ttbr1 & LPAE_BASE) | (ttbr0 & !LPAE_BASE),
        ));
    }
    cpu.issue(Insn::Isb);
    branch_predictor(cpu);
    Ok(true)
}

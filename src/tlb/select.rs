//! Which ARMv7 backend a CPU needs, and whether hardware broadcast really works on it.
//!
//! Everything is decided from register *values* ([`CpuRegisters`]: `MIDR`, `REVIDR`,
//! `MPIDR`, `ID_MMFR3`, `ACTLR`), so the decision is a pure function that host tests cover;
//! only reading the registers is ARM-only (`CpuRegisters::read`).
//!
//! # Broadcast prerequisites, checked
//!
//! [`CpuFeatures::broadcast`] gives the inner-shareable backend only when broadcast TLB
//! maintenance is *effective* on this CPU, in this order:
//!
//! 1. `MPIDR.MP` (bit 31): without the multiprocessing extensions there is no broadcast
//!    at all, and the core cannot say whether it is alone:
//!    [`BroadcastReason::NoMpExtensions`]. (Every such ARMv7 core, the Cortex-A8 for
//!    one, is in practice a uniprocessor; the kernel that knows it forces
//!    [`Shareability::Local`].)
//! 2. `MPIDR.U` (bit 30) set: a uniprocessor system. [`Shareability::Local`] is the right
//!    answer, not an error.
//! 3. `ID_MMFR3.MaintBcst` (bits \[15:12\]) below 2: the hardware does not broadcast TLB
//!    maintenance: [`BroadcastReason::MaintenanceBroadcast`].
//! 4. `ACTLR`, read with the meaning the part gives it ([`ActlrBits::for_part`], table
//!    below): `SMP` clear gives [`BroadcastReason::ActlrSmpClear`] (the core neither takes
//!    part in coherency nor receives broadcasts); `FW` clear on a Cortex-A5/A9 gives
//!    [`BroadcastReason::ActlrFwClear`] (its own `...IS` operations stay local); `DDVM`
//!    set on a Cortex-A7 gives [`BroadcastReason::ActlrDvmDisabled`]. On any
//!    other part `ACTLR` is IMPLEMENTATION DEFINED and the crate does not know what its
//!    bits mean, so it refuses with [`BroadcastReason::UnknownPart`] rather than guess; a
//!    kernel that has checked its part's manual says so with
//!    [`CpuFeatures::assume_actlr_effective`].
//!
//! | part | `ACTLR` bits needed | source |
//! | --- | --- | --- |
//! | Cortex-A9, Cortex-A5 | `SMP` (6) and `FW` (0) | A9 MPCore TRM ("Broadcasting of maintenance operations": a core *sends* broadcasts with SMP = 1 and FW = 1, *receives* them with SMP = 1); A5 TRM `ACTLR`; Linux `__v7_ca9mp_setup`/`__v7_ca5mp_setup` set both |
//! | Cortex-A7 | `SMP` (6), and `DDVM` (15) clear | A7 TRM `ACTLR` (`SMP` must be set before the caches and MMU are enabled and before any cache or TLB maintenance); `DDVM`, "disable Distributed Virtual Memory transactions", as Arm's CMSIS `core_ca.h` names it: read conservatively, as turning broadcast maintenance off; Linux `__v7_ca7mp_setup` sets bit 6 only |
//! | Cortex-A15 | `SMP` (6) | A15 TRM `ACTLR` (as the A7); Linux `__v7_ca15mp_setup` sets bit 6 only |
//! | Cortex-A12, A17, Brahma-B15 | `SMP` (6) | Linux `__v7_ca12mp_setup`, `__v7_ca17mp_setup`, `__v7_b15mp_setup` set bit 6 only (their manuals were not checked here) |
//!
//! An SMP CPU that fails a check gets `Err(`[`BroadcastUnavailable`]`)`, never a silent
//! [`Shareability::Local`] (which would cover this CPU only, so another CPU would keep a
//! translation of a freed frame). The kernel then chooses: an IPI shootdown that runs the
//! local operations on every CPU (the crate's `tlb::ipi` backend), fixing `ACTLR` (see
//! below) and detecting again, or forcing a shareability it knows to be right
//! (`Cp15Tlb::forced` on ARM, [`super::Armv7Tlb::with_shareability`]).
//!
//! # Setting the bits
//!
//! `arch::cp15::join_coherency` (ARM only) is what a kernel calls on each CPU, early in
//! its bring-up (before that CPU turns on its data cache and MMU): it sets the bits its
//! part needs with a read-modify-write, reads `ACTLR` back and reports
//! [`JoinError::DidNotStick`] when they did not take. That happens when `ACTLR` is
//! writable only from Secure state: the Cortex-A9 makes it read-only in Non-secure state
//! unless `NSACR[18]` is set, the A5/A7/A15 likewise unless `NSACR.NS_SMP` is, and then
//! only `SMP` is writable (so a Non-secure A5/A9 kernel cannot set `FW` itself; its
//! firmware must). It also happens on QEMU, where `ACTLR` reads as zero and ignores writes.
//! The pure halves are [`actlr_join_value`] and [`check_joined`].
//!
//! # What the crate cannot see
//!
//! - **Interconnect DVM**: on a multi-cluster system (big.LITTLE through a CCI-400, for
//!   example) broadcast maintenance reaches the other cluster only when the interconnect
//!   forwards DVM messages (the CCI's per-slave-interface snoop/DVM enables, usually set by
//!   firmware). Nothing in a CPU register says so; `ACTLR.SMP` covers the core's own
//!   cluster.
//! - **Cortex-A9 SCU**: the Snoop Control Unit (its control register at `PERIPHBASE`) must be
//!   enabled, by the boot CPU, before any core's `SMP` bit means coherency; the crate
//!   never touches the SCU.
//! - Secure firmware that changes `ACTLR` later, and `NSACR` itself (Secure-only to read
//!   on some parts).
//!
//! # QEMU
//!
//! QEMU 7.2 reads `ACTLR` as zero and ignores writes, yet broadcasts TLB maintenance to
//! every emulated CPU. On `-M virt -smp 4` the strict decision therefore refuses
//! broadcast ([`BroadcastReason::ActlrSmpClear`]); the boot tests' runtime uses
//! [`CpuFeatures::assume_actlr_effective`] (and says why), while host tests show the
//! refusal with real `ACTLR` values.

use tock_registers::LocalRegisterCopy;

pub use crate::arch::cpu::{
    actlr_join_value, check_joined, join_with, ActlrBits, JoinError, Joined, MainId,
    IMPLEMENTER_ARM, IMPLEMENTER_BROADCOM, PART_BRAHMA_B15, PART_CORTEX_A12, PART_CORTEX_A15,
    PART_CORTEX_A17, PART_CORTEX_A5, PART_CORTEX_A7, PART_CORTEX_A9,
};
use crate::arch::fields::{ACTLR_BITS, ID_MMFR3_BITS, MPIDR_BITS};

/// Where the ARMv7 backend's maintenance operations act.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Shareability {
    /// This CPU only: `TLBIMVA`, `TLBIMVAA`, `TLBIASID`, `TLBIALL`, `BPIALL`, bracketed by
    /// `dsb nshst` and `dsb nsh` + `isb`. Right for a uniprocessor, or for an SMP kernel that
    /// runs the batch on every CPU itself (IPIs) because the hardware cannot broadcast.
    Local,
    /// Every CPU in the inner shareable domain: `TLBIMVAIS`, `TLBIMVAAIS`, `TLBIASIDIS`,
    /// `TLBIALLIS`, `BPIALLIS`, bracketed by `dsb ishst` and `dsb ish` + `isb`.
    InnerShareable,
}

/// The register values detection decides from (all 32-bit CP15 registers).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct CpuRegisters {
    /// `MIDR`: which part and revision (the meaning of `ACTLR`; errata).
    pub midr: u32,
    /// `REVIDR`: which errata fixes this revision carries (Cortex-A15 798181).
    pub revidr: u32,
    /// `MPIDR`: multiprocessing extensions, uniprocessor.
    pub mpidr: u32,
    /// `ID_MMFR3`: whether maintenance is broadcast by hardware.
    pub id_mmfr3: u32,
    /// `ACTLR`: whether this core has broadcast switched on.
    pub actlr: u32,
}

#[cfg(target_arch = "arm")]
impl CpuRegisters {
    /// Reads the five registers on this CPU.
    #[must_use]
    pub fn read() -> Self {
        use crate::arch::cp15::{ACTLR, ID_MMFR3, MIDR, MPIDR, REVIDR};
        use tock_registers::interfaces::Readable;
        Self {
            midr: MIDR.get(),
            revidr: REVIDR.get(),
            mpidr: MPIDR.get(),
            id_mmfr3: ID_MMFR3.get(),
            actlr: ACTLR.get(),
        }
    }
}

/// What `ACTLR` says, as far as the decision is concerned.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Actlr {
    /// The value read; checked against the part's bits ([`ActlrBits::for_part`]).
    Value(u32),
    /// The kernel vouches that broadcast is switched on whatever `ACTLR` reads
    /// ([`CpuFeatures::assume_actlr_effective`]).
    AssumedEffective,
}

/// Why broadcast TLB maintenance is not effective on an SMP CPU.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum BroadcastReason {
    /// `MPIDR.MP` = 0: no multiprocessing extensions, so no broadcast (and no way to
    /// tell a uniprocessor).
    NoMpExtensions,
    /// `ID_MMFR3.MaintBcst` is this value, below 2: TLB maintenance is not broadcast.
    MaintenanceBroadcast(u8),
    /// `ACTLR.SMP` (bit 6) is clear: the core is outside coherency and receives no
    /// broadcasts.
    ActlrSmpClear,
    /// `ACTLR.FW` (bit 0) is clear on a Cortex-A5/A9: the core's own maintenance is not
    /// broadcast.
    ActlrFwClear,
    /// `ACTLR.DDVM` (bit 15) is set on a Cortex-A7: DVM transactions, which carry
    /// broadcast maintenance, are disabled.
    ActlrDvmDisabled,
    /// A part whose `ACTLR` the crate cannot read (IMPLEMENTATION DEFINED): the kernel
    /// decides ([`CpuFeatures::assume_actlr_effective`]).
    UnknownPart {
        /// `MIDR.Implementer`.
        implementer: u8,
        /// `MIDR.PartNum`.
        part: u16,
    },
}

/// An SMP CPU on which broadcast maintenance is not effective: the inner-shareable backend
/// would miss other CPUs' TLBs, and the local one covers only this CPU.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct BroadcastUnavailable {
    /// Why.
    pub reason: BroadcastReason,
}

impl core::fmt::Display for BroadcastUnavailable {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("broadcast TLB maintenance is not effective on this CPU: ")?;
        match self.reason {
            BroadcastReason::NoMpExtensions => f.write_str("no multiprocessing extensions"),
            BroadcastReason::MaintenanceBroadcast(level) => {
                write!(f, "ID_MMFR3.MaintBcst = {level} (TLB broadcast needs 2)")
            }
            BroadcastReason::ActlrSmpClear => f.write_str("ACTLR.SMP is clear"),
            BroadcastReason::ActlrFwClear => f.write_str("ACTLR.FW is clear"),
            BroadcastReason::ActlrDvmDisabled => f.write_str("ACTLR.DDVM is set"),
            BroadcastReason::UnknownPart { implementer, part } => write!(
                f,
                "ACTLR of implementer {implementer:#x} part {part:#x} is not known to the crate"
            ),
        }
    }
}

/// Why a backend could not be detected ([`super::Armv7Tlb::for_cpu`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DetectError {
    /// An SMP CPU without effective broadcast.
    Broadcast(BroadcastUnavailable),
    /// A CPU of the system needs the full 798181 workaround and the system has no IPI hook.
    Errata(super::errata::ErrataError),
}

impl From<BroadcastUnavailable> for DetectError {
    fn from(e: BroadcastUnavailable) -> Self {
        DetectError::Broadcast(e)
    }
}

impl From<super::errata::ErrataError> for DetectError {
    fn from(e: super::errata::ErrataError) -> Self {
        DetectError::Errata(e)
    }
}

impl core::fmt::Display for DetectError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DetectError::Broadcast(e) => e.fmt(f),
            DetectError::Errata(e) => e.fmt(f),
        }
    }
}

/// The facts that choose a [`Shareability`], decoded from [`CpuRegisters`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct CpuFeatures {
    /// `MIDR`, decoded: says what `ACTLR` means.
    pub main_id: MainId,
    /// `MPIDR.MP` (bit 31): the multiprocessing extensions are implemented.
    pub mp_extensions: bool,
    /// `MPIDR.U` (bit 30): the CPU is the only one in its system (only meaningful with
    /// the multiprocessing extensions).
    pub uniprocessor: bool,
    /// `ID_MMFR3.MaintBcst` (bits \[15:12\]): 0 no broadcast, 1 cache and branch predictor
    /// maintenance only, 2 TLB maintenance too.
    pub maint_broadcast: u8,
    /// `ACTLR`.
    pub actlr: Actlr,
}

impl CpuFeatures {
    /// Decodes the register values (`REVIDR` is for errata, not needed here).
    #[must_use]
    pub fn from_registers(midr: u32, mpidr: u32, id_mmfr3: u32, actlr: u32) -> Self {
        let mpidr = LocalRegisterCopy::<u32, MPIDR_BITS::Register>::new(mpidr);
        let mmfr3 = LocalRegisterCopy::<u32, ID_MMFR3_BITS::Register>::new(id_mmfr3);
        Self {
            main_id: MainId::from_midr(midr),
            mp_extensions: mpidr.is_set(MPIDR_BITS::MP),
            uniprocessor: mpidr.is_set(MPIDR_BITS::U),
            maint_broadcast: mmfr3.read(ID_MMFR3_BITS::MAINTBCST) as u8,
            actlr: Actlr::Value(actlr),
        }
    }

    /// [`CpuFeatures::from_registers`] of a register snapshot.
    #[must_use]
    pub fn from_cpu(regs: &CpuRegisters) -> Self {
        Self::from_registers(regs.midr, regs.mpidr, regs.id_mmfr3, regs.actlr)
    }

    /// The same features with the `ACTLR` check switched off: the kernel vouches that this
    /// core broadcasts and takes part in coherency whatever `ACTLR` reads. Right on QEMU
    /// (its `ACTLR` is RAZ/WI while it does broadcast), and for a part the crate does not
    /// know ([`BroadcastReason::UnknownPart`]) once the kernel has checked that part's
    /// manual. The `MPIDR` and `ID_MMFR3` checks still apply.
    #[must_use]
    pub const fn assume_actlr_effective(mut self) -> Self {
        self.actlr = Actlr::AssumedEffective;
        self
    }

    /// Whether this CPU may share its TLB maintenance with others: it has the
    /// multiprocessing extensions and does not report a uniprocessor system.
    #[must_use]
    pub const fn smp(&self) -> bool {
        self.mp_extensions && !self.uniprocessor
    }

    /// Whether the hardware implements broadcast TLB maintenance (`ID_MMFR3`); whether it
    /// is switched on is [`CpuFeatures::broadcast`]'s business.
    #[must_use]
    pub const fn tlb_broadcast(&self) -> bool {
        self.maint_broadcast >= 2
    }

    /// The backend these features call for (see the [module documentation](self)):
    /// [`Shareability::InnerShareable`] when broadcast is effective,
    /// [`Shareability::Local`] on a uniprocessor.
    ///
    /// # Errors
    /// [`BroadcastUnavailable`] with the first check that failed, on a CPU that may have
    /// others beside it and cannot broadcast to them.
    pub fn broadcast(&self) -> Result<Shareability, BroadcastUnavailable> {
        let fail = |reason| Err(BroadcastUnavailable { reason });
        if !self.mp_extensions {
            return fail(BroadcastReason::NoMpExtensions);
        }
        if self.uniprocessor {
            return Ok(Shareability::Local);
        }
        if !self.tlb_broadcast() {
            return fail(BroadcastReason::MaintenanceBroadcast(self.maint_broadcast));
        }
        let actlr = match self.actlr {
            Actlr::AssumedEffective => return Ok(Shareability::InnerShareable),
            Actlr::Value(v) => LocalRegisterCopy::<u32, ACTLR_BITS::Register>::new(v),
        };
        let Some(bits) = ActlrBits::for_part(self.main_id) else {
            return fail(BroadcastReason::UnknownPart {
                implementer: self.main_id.implementer,
                part: self.main_id.part,
            });
        };
        if !actlr.is_set(ACTLR_BITS::SMP) {
            fail(BroadcastReason::ActlrSmpClear)
        } else if bits.fw && !actlr.is_set(ACTLR_BITS::FW) {
            fail(BroadcastReason::ActlrFwClear)
        } else if bits.ddvm && actlr.is_set(ACTLR_BITS::A7_DDVM) {
            fail(BroadcastReason::ActlrDvmDisabled)
        } else {
            Ok(Shareability::InnerShareable)
        }
    }

    /// An SMP CPU without effective broadcast: the kernel must run each batch on every CPU
    /// (IPIs) or make broadcast effective.
    #[must_use]
    pub fn needs_ipi_shootdown(&self) -> bool {
        self.broadcast().is_err()
    }
}

#[cfg(target_arch = "arm")]
impl CpuFeatures {
    /// Reads `MIDR`, `MPIDR`, `ID_MMFR3` and `ACTLR` on this CPU.
    #[must_use]
    pub fn read() -> Self {
        Self::from_cpu(&CpuRegisters::read())
    }
}

#[cfg(target_arch = "arm")]
impl Shareability {
    /// Reads this CPU's registers and decides ([`CpuFeatures::broadcast`]).
    ///
    /// # Errors
    /// As [`CpuFeatures::broadcast`].
    pub fn detect() -> Result<Self, BroadcastUnavailable> {
        CpuFeatures::read().broadcast()
    }
}

#[cfg(test)]
#[path = "select_tests.rs"]
pub(crate) mod decision_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_fields_not_neighbours() {
        // Every bit set except the broadcast field: must read 0 there.
        let f = CpuFeatures::from_registers(0x410F_C0F0, 0xFFFF_FFFF, 0xFFFF_0FFF, 0);
        assert_eq!(f.maint_broadcast, 0);
        assert!(f.uniprocessor && f.mp_extensions);
        let f = CpuFeatures::from_registers(0x410F_C0F0, 0x7FFF_FFFF, 0x0000_2000, 0);
        assert!(!f.mp_extensions && f.uniprocessor);
        assert_eq!(f.maint_broadcast, 2);
    }

    #[test]
    fn midr_decoding() {
        // Cortex-A15 r2p1.
        let id = MainId::from_midr(0x412F_C0F1);
        assert_eq!(
            id,
            MainId {
                implementer: 0x41,
                variant: 2,
                part: 0xC0F,
                revision: 1
            }
        );
        assert!(id.is(IMPLEMENTER_ARM, PART_CORTEX_A15));
        // Cortex-A7 r0p5.
        let id = MainId::from_midr(0x410F_C075);
        assert!(id.is(IMPLEMENTER_ARM, PART_CORTEX_A7));
        assert_eq!(id.rev(), (0, 5));
        assert!((2, 1) < (2, 2) && (2, 4) < (3, 0));
    }
}

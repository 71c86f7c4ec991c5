//! Which CPU this is, and what its `ACTLR` must hold for it to take part in coherency.
//!
//! [`MainId`] decodes `MIDR` (implementer, part, `rNpM`); [`ActlrBits::for_part`] says
//! which IMPLEMENTATION DEFINED `ACTLR` bits a known part needs for broadcast TLB
//! maintenance (`SMP`, and `FW` on Cortex-A5/A9; `DDVM` clear on Cortex-A7); [`join_with`]
//! is the read-modify-write-read-back that `arch::cp15::join_coherency` runs on the CPU
//! itself. The policy that uses these (whether broadcast is effective, which backend to
//! build) is `crate::tlb::select`, above this layer; the table of parts and their sources
//! is in its documentation.

use tock_registers::LocalRegisterCopy;

use super::fields::{ACTLR_BITS, MIDR_BITS};

/// The `ACTLR` bits a part needs for broadcast maintenance (`SMP`, bit 6, always; `FW`,
/// bit 0, on some), per the table in the documentation of [`crate::tlb::select`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ActlrBits {
    /// `FW` (bit 0) is needed too: Cortex-A5 and Cortex-A9.
    pub fw: bool,
    /// `DDVM` (bit 15) must be clear: Cortex-A7.
    pub ddvm: bool,
}

impl ActlrBits {
    /// The bits `id`'s part needs, or `None` for a part whose `ACTLR` the crate does not
    /// know (the bits are IMPLEMENTATION DEFINED, so nothing is assumed).
    #[must_use]
    pub const fn for_part(id: MainId) -> Option<Self> {
        match (id.implementer, id.part) {
            (IMPLEMENTER_ARM, PART_CORTEX_A5 | PART_CORTEX_A9) => Some(Self {
                fw: true,
                ddvm: false,
            }),
            (IMPLEMENTER_ARM, PART_CORTEX_A7) => Some(Self {
                fw: false,
                ddvm: true,
            }),
            (IMPLEMENTER_ARM, PART_CORTEX_A12 | PART_CORTEX_A15 | PART_CORTEX_A17)
            | (IMPLEMENTER_BROADCOM, PART_BRAHMA_B15) => Some(Self {
                fw: false,
                ddvm: false,
            }),
            _ => None,
        }
    }

    /// The mask of the bits that must be set in `ACTLR` (`DDVM`, which must be clear, is
    /// not in it).
    #[must_use]
    pub fn mask(self) -> u32 {
        let smp = ACTLR_BITS::SMP::SET.value;
        if self.fw {
            smp | ACTLR_BITS::FW::SET.value
        } else {
            smp
        }
    }
}

/// What `arch::cp15::join_coherency` found.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Joined {
    /// The bits were already set; nothing was written.
    AlreadySet,
    /// The bits were written and read back set.
    Set,
}

/// Why `arch::cp15::join_coherency` could not switch broadcast on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum JoinError {
    /// The crate does not know this part's `ACTLR` and writes nothing to it.
    UnknownPart {
        /// `MIDR.Implementer`.
        implementer: u8,
        /// `MIDR.PartNum`.
        part: u16,
    },
    /// `ACTLR` was written but reads back without the bits: the write was ignored
    /// (Non-secure state without `NSACR` permission for that bit, or an emulator whose
    /// `ACTLR` is RAZ/WI, as QEMU's).
    DidNotStick {
        /// The bits the part needs.
        wanted: u32,
        /// What `ACTLR` read afterwards.
        actlr: u32,
    },
}

impl core::fmt::Display for JoinError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            JoinError::UnknownPart { implementer, part } => write!(
                f,
                "ACTLR of implementer {implementer:#x} part {part:#x} is not known to the crate"
            ),
            JoinError::DidNotStick { wanted, actlr } => write!(
                f,
                "ACTLR bits {wanted:#x} did not stick (reads {actlr:#x}): Secure-only, or RAZ/WI"
            ),
        }
    }
}

/// The first half of `join_coherency`: the value to write to `ACTLR` on a CPU with this
/// `MIDR` whose `ACTLR` reads `actlr` (every other bit kept), or `None` if the bits are
/// already set (so nothing is written: a write that `NSACR` forbids may trap).
///
/// # Errors
/// [`JoinError::UnknownPart`] for a part not in [`ActlrBits::for_part`].
pub fn actlr_join_value(midr: u32, actlr: u32) -> Result<Option<u32>, JoinError> {
    let wanted = needed_bits(midr)?;
    Ok((actlr & wanted != wanted).then_some(actlr | wanted))
}

/// The second half of `join_coherency`: whether `ACTLR` read back after the write as
/// `actlr` has the bits.
///
/// # Errors
/// [`JoinError::DidNotStick`] if any is missing; [`JoinError::UnknownPart`] as
/// [`actlr_join_value`].
pub fn check_joined(midr: u32, actlr: u32) -> Result<(), JoinError> {
    let wanted = needed_bits(midr)?;
    if actlr & wanted == wanted {
        Ok(())
    } else {
        Err(JoinError::DidNotStick { wanted, actlr })
    }
}

/// The whole of `arch::cp15::join_coherency` over any `ACTLR`: `read` reads it, `write`
/// writes it (with whatever barriers the caller needs). Nothing is written when the bits
/// are already set; after a write the register is read back, and success is claimed only
/// if the bits are there.
///
/// # Errors
/// As `join_coherency`: [`JoinError::UnknownPart`], [`JoinError::DidNotStick`].
pub fn join_with(
    midr: u32,
    mut read: impl FnMut() -> u32,
    write: impl FnOnce(u32),
) -> Result<Joined, JoinError> {
    let Some(value) = actlr_join_value(midr, read())? else {
        return Ok(Joined::AlreadySet);
    };
    write(value);
    #[cfg(test)]
    if crate::tlb::select::decision_tests::mutant_trust_the_write() {
        return Ok(Joined::Set);
    }
    check_joined(midr, read()).map(|()| Joined::Set)
}

fn needed_bits(midr: u32) -> Result<u32, JoinError> {
    let id = MainId::from_midr(midr);
    ActlrBits::for_part(id)
        .map(ActlrBits::mask)
        .ok_or(JoinError::UnknownPart {
            implementer: id.implementer,
            part: id.part,
        })
}

/// A decoded `MIDR`: who made the CPU, which part, which revision.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MainId {
    /// Implementer code (0x41 Arm, 0x42 Broadcom).
    pub implementer: u8,
    /// Variant: the `N` of `rNpM`.
    pub variant: u8,
    /// Primary part number (0xC0F Cortex-A15, 0xC07 Cortex-A7, 0xC09 Cortex-A9).
    pub part: u16,
    /// Revision: the `M` of `rNpM`.
    pub revision: u8,
}

/// Arm Ltd. implementer code.
pub const IMPLEMENTER_ARM: u8 = 0x41;
/// Broadcom implementer code.
pub const IMPLEMENTER_BROADCOM: u8 = 0x42;
/// Cortex-A5 part number.
pub const PART_CORTEX_A5: u16 = 0xC05;
/// Cortex-A7 part number.
pub const PART_CORTEX_A7: u16 = 0xC07;
/// Cortex-A12 part number.
pub const PART_CORTEX_A12: u16 = 0xC0D;
/// Cortex-A17 part number.
pub const PART_CORTEX_A17: u16 = 0xC0E;
/// Cortex-A9 part number.
pub const PART_CORTEX_A9: u16 = 0xC09;
/// Cortex-A15 part number.
pub const PART_CORTEX_A15: u16 = 0xC0F;
/// Broadcom Brahma-B15 part number.
pub const PART_BRAHMA_B15: u16 = 0x00F;

impl MainId {
    /// Decodes a `MIDR` value.
    #[must_use]
    pub fn from_midr(midr: u32) -> Self {
        let r = LocalRegisterCopy::<u32, MIDR_BITS::Register>::new(midr);
        Self {
            implementer: r.read(MIDR_BITS::IMPLEMENTER) as u8,
            variant: r.read(MIDR_BITS::VARIANT) as u8,
            part: r.read(MIDR_BITS::PARTNUM) as u16,
            revision: r.read(MIDR_BITS::REVISION) as u8,
        }
    }

    /// Whether this is `implementer`'s `part`.
    #[must_use]
    pub const fn is(&self, implementer: u8, part: u16) -> bool {
        self.implementer == implementer && self.part == part
    }

    /// `(variant, revision)`, ordered as revisions are: `r2p1 < r2p2 < r3p0`.
    #[must_use]
    pub const fn rev(&self) -> (u8, u8) {
        (self.variant, self.revision)
    }
}

/// Whether a CPU with this `MIDR` has Cortex-A9 erratum 754322 (r2pX and r3pX, as Linux's
/// `ARM_ERRATA_754322`): a speculative table walk started before a `CONTEXTIDR` write may
/// complete after it and leave an entry that hits under the new ASID. The workaround (a
/// full `dsb` right before the write) is in every short-descriptor switch
/// ([`super::switch::switch_short`]), which reads `MIDR` itself, so a kernel cannot forget
/// it.
#[must_use]
pub fn a9_754322_affected(midr: u32) -> bool {
    let id = MainId::from_midr(midr);
    id.is(IMPLEMENTER_ARM, PART_CORTEX_A9) && (2..=3).contains(&id.variant)
}

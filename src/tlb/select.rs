//! Which ARMv7 backend a CPU needs: decided from register *values*, so the decision is a
//! pure function that host tests cover; only reading the registers is ARM-only
//! (`Shareability::detect`, `CpuFeatures::read`).

use tock_registers::LocalRegisterCopy;

use crate::arch::fields::{ID_MMFR3_BITS, MIDR_BITS, MPIDR_BITS};

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

/// The facts from `MPIDR` and `ID_MMFR3` that choose a [`Shareability`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct CpuFeatures {
    /// `MPIDR.MP` (bit 31): the multiprocessing extensions are implemented.
    pub mp_extensions: bool,
    /// `MPIDR.U` (bit 30): the CPU is the only one in its system (only meaningful with
    /// the multiprocessing extensions).
    pub uniprocessor: bool,
    /// `ID_MMFR3.MaintBcst` (bits \[15:12\]): 0 no broadcast, 1 cache and branch predictor
    /// maintenance only, 2 TLB maintenance too.
    pub maint_broadcast: u8,
}

impl CpuFeatures {
    /// Decodes the two register values.
    #[must_use]
    pub fn from_registers(mpidr: u32, id_mmfr3: u32) -> Self {
        let mpidr = LocalRegisterCopy::<u32, MPIDR_BITS::Register>::new(mpidr);
        let mmfr3 = LocalRegisterCopy::<u32, ID_MMFR3_BITS::Register>::new(id_mmfr3);
        Self {
            mp_extensions: mpidr.is_set(MPIDR_BITS::MP),
            uniprocessor: mpidr.is_set(MPIDR_BITS::U),
            maint_broadcast: mmfr3.read(ID_MMFR3_BITS::MAINTBCST) as u8,
        }
    }

    /// Whether this CPU may share its TLB maintenance with others: it has the
    /// multiprocessing extensions and does not report a uniprocessor system.
    #[must_use]
    pub const fn smp(&self) -> bool {
        self.mp_extensions && !self.uniprocessor
    }

    /// Whether TLB maintenance is broadcast in the inner shareable domain by hardware.
    #[must_use]
    pub const fn tlb_broadcast(&self) -> bool {
        self.maint_broadcast >= 2
    }

    /// The backend shareability these features call for: [`Shareability::InnerShareable`] on an SMP CPU
    /// whose TLB maintenance broadcasts, [`Shareability::Local`] otherwise.
    #[must_use]
    pub const fn shareability(&self) -> Shareability {
        if self.smp() && self.tlb_broadcast() {
            Shareability::InnerShareable
        } else {
            Shareability::Local
        }
    }

    /// An SMP CPU whose TLB maintenance does not broadcast: [`Shareability::Local`] alone covers
    /// only this CPU, and the kernel must run each batch on every CPU (IPIs) itself.
    #[must_use]
    pub const fn needs_ipi_shootdown(&self) -> bool {
        self.smp() && !self.tlb_broadcast()
    }
}

impl Shareability {
    /// The shareability [`CpuFeatures::shareability`] chooses for these register values.
    #[must_use]
    pub fn from_registers(mpidr: u32, id_mmfr3: u32) -> Self {
        CpuFeatures::from_registers(mpidr, id_mmfr3).shareability()
    }

    /// Reads `MPIDR` and `ID_MMFR3` on this CPU and chooses (see [`CpuFeatures::shareability`]).
    /// A kernel that knows better (say, a single-CPU system on an SMP-capable core, where
    /// local operations are cheaper) simply uses another `Shareability`.
    #[cfg(target_arch = "arm")]
    #[must_use]
    pub fn detect() -> Self {
        CpuFeatures::read().shareability()
    }
}

#[cfg(target_arch = "arm")]
impl CpuFeatures {
    /// Reads `MPIDR` and `ID_MMFR3` on this CPU.
    #[must_use]
    pub fn read() -> Self {
        use crate::arch::cp15::{ID_MMFR3, MPIDR};
        use tock_registers::interfaces::Readable;
        Self::from_registers(MPIDR.get(), ID_MMFR3.get())
    }
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
/// Cortex-A7 part number.
pub const PART_CORTEX_A7: u16 = 0xC07;
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

#[cfg(test)]
mod tests {
    use super::*;

    // MPIDR values: bit 31 = MP format, bit 30 = U.
    const MP_SMP: u32 = 0x8000_0001;
    const MP_UP: u32 = 0xC000_0000;
    const NO_MP: u32 = 0x0000_0000;

    fn mmfr3(bcst: u32) -> u32 {
        0x0210_0211 | (bcst << 12)
    }

    #[test]
    fn broadcast_needs_smp_and_tlb_broadcast() {
        assert_eq!(
            Shareability::from_registers(MP_SMP, mmfr3(2)),
            Shareability::InnerShareable
        );
        // A newer encoding above 2 still broadcasts.
        assert_eq!(
            Shareability::from_registers(MP_SMP, mmfr3(3)),
            Shareability::InnerShareable
        );
        // Cache-only broadcast is not enough for TLB maintenance.
        assert_eq!(
            Shareability::from_registers(MP_SMP, mmfr3(1)),
            Shareability::Local
        );
        assert_eq!(
            Shareability::from_registers(MP_SMP, mmfr3(0)),
            Shareability::Local
        );
        // Uniprocessor or no MP extensions: local, whatever MMFR3 says.
        assert_eq!(
            Shareability::from_registers(MP_UP, mmfr3(2)),
            Shareability::Local
        );
        assert_eq!(
            Shareability::from_registers(NO_MP, mmfr3(2)),
            Shareability::Local
        );
    }

    #[test]
    fn ipi_shootdown_only_for_smp_without_broadcast() {
        assert!(CpuFeatures::from_registers(MP_SMP, mmfr3(1)).needs_ipi_shootdown());
        assert!(!CpuFeatures::from_registers(MP_SMP, mmfr3(2)).needs_ipi_shootdown());
        assert!(!CpuFeatures::from_registers(MP_UP, mmfr3(0)).needs_ipi_shootdown());
    }

    #[test]
    fn decodes_fields_not_neighbours() {
        // Every bit set except the broadcast field: must read 0 there.
        let f = CpuFeatures::from_registers(0xFFFF_FFFF, 0xFFFF_0FFF);
        assert_eq!(f.maint_broadcast, 0);
        assert!(f.uniprocessor && f.mp_extensions);
        let f = CpuFeatures::from_registers(0x7FFF_FFFF, 0x0000_2000);
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

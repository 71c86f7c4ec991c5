//! What the ID registers say the tables may use: the optional VMSAv7 features of each
//! descriptor format, decoded from `ID_MMFR0` and `ID_MMFR3`.
//!
//! [`short::Features`] (re-exported as `crate::short::Features`) and [`lpae::Features`]
//! (`crate::lpae::Features`) are plain values: `from_id_regs` decodes given register
//! values (host code and tests), `arch::mmu::detect_features` and
//! `arch::lpae::detect_features` read the registers of the CPU they run on.

/// The short-descriptor format's optional features.
pub mod short {
    /// Optional VMSAv7 features the tables may use. `crate::arch::mmu::detect_features` reads
    /// them from the ID registers on the target.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub struct Features {
        /// The PXN bit exists (`ID_MMFR0.VMSA >= 4`); L1 type `0b11` is a section with PXN.
        pub pxn: bool,
        /// Supersections exist (`ID_MMFR3.Supersec == 0`).
        pub supersections: bool,
        /// Supersections reach 40-bit physical addresses (LPAE-capable CPUs).
        pub pa40: bool,
        /// Table walks are coherent with the data cache (`ID_MMFR3.CohWalk == 1`); otherwise
        /// every descriptor write is cleaned to the point of unification.
        pub coherent_walk: bool,
    }

    impl Features {
        /// Everything (Cortex-A7/A15 and QEMU's models of them).
        pub const ALL: Features = Features {
            pxn: true,
            supersections: true,
            pa40: true,
            coherent_walk: true,
        };
        /// The VMSAv7 baseline: no PXN, no supersections (optional in VMSAv7:
        /// `ID_MMFR3.Supersec`), non-coherent walks.
        pub const BASELINE: Features = Features {
            pxn: false,
            supersections: false,
            pa40: false,
            coherent_walk: false,
        };

        /// Decodes the features from `ID_MMFR0` and `ID_MMFR3` values (`VMSA >= 4`: PXN;
        /// `VMSA >= 5`: LPAE, hence 40-bit supersection addresses; `Supersec == 0`:
        /// supersections; `CohWalk == 1`: coherent walks).
        #[must_use]
        pub fn from_id_regs(id_mmfr0: u32, id_mmfr3: u32) -> Features {
            use crate::arch::fields::{ID_MMFR0_BITS, ID_MMFR3_BITS};
            use tock_registers::LocalRegisterCopy;
            let m0 = LocalRegisterCopy::<u32, ID_MMFR0_BITS::Register>::new(id_mmfr0);
            let m3 = LocalRegisterCopy::<u32, ID_MMFR3_BITS::Register>::new(id_mmfr3);
            let vmsa = m0.read(ID_MMFR0_BITS::VMSA);
            let supersections = m3.read(ID_MMFR3_BITS::SUPERSEC) == 0;
            Features {
                pxn: vmsa >= 4,
                supersections,
                pa40: supersections && vmsa >= 5,
                coherent_walk: m3.read(ID_MMFR3_BITS::COHWALK) >= 1,
            }
        }
    }
}

/// The long-descriptor format's optional features.
pub mod lpae {
    /// What the long-descriptor tables depend on, besides LPAE itself (which gives PXN and
    /// 40-bit addresses everywhere).
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub struct Features {
        /// Table walks are coherent with the data cache (`ID_MMFR3.CohWalk == 1`); otherwise
        /// every descriptor write is cleaned to the point of unification.
        pub coherent_walk: bool,
    }

    impl Features {
        /// Coherent walks (Cortex-A7/A15 and QEMU's models of them).
        pub const ALL: Features = Features {
            coherent_walk: true,
        };
        /// Non-coherent walks.
        pub const BASELINE: Features = Features {
            coherent_walk: false,
        };

        /// Decodes `ID_MMFR0` and `ID_MMFR3`; `None` unless the CPU has LPAE
        /// (`ID_MMFR0.VMSA >= 5`).
        #[must_use]
        pub fn from_id_regs(id_mmfr0: u32, id_mmfr3: u32) -> Option<Features> {
            use crate::arch::fields::{ID_MMFR0_BITS, ID_MMFR3_BITS};
            use tock_registers::LocalRegisterCopy;
            let m0 = LocalRegisterCopy::<u32, ID_MMFR0_BITS::Register>::new(id_mmfr0);
            let m3 = LocalRegisterCopy::<u32, ID_MMFR3_BITS::Register>::new(id_mmfr3);
            (m0.read(ID_MMFR0_BITS::VMSA) >= 5).then(|| Features {
                coherent_walk: m3.read(ID_MMFR3_BITS::COHWALK) >= 1,
            })
        }
    }
}

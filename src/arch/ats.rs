//! Stage-1 address translation operations (`ATS1C**`): ask the hardware walker what a VA
//! translates to under the current context, with a given permission check, without
//! accessing memory. Each returns the 32-bit (short-descriptor format) `PAR`; the `*_64`
//! forms return the 64-bit `PAR` that the operations write when `TTBCR.EAE = 1`
//! (decoded by [`Par64Result`]).
//!
//! `ATS1CPR` lives in [`super::cp15`]; the other three are here.

pub use super::cp15::ats1cpr;
use super::cp15::{PAR, PAR_64};
use tock_registers::interfaces::Readable;

/// An `ATS1C**` operation returning `PAR` through the accessor `$par` (32- or 64-bit
/// view, of type `$t`).
macro_rules! ats {
    ($(#[$doc:meta])* $name:ident, $op2:literal) => {
        ats!($(#[$doc])* $name, $op2, PAR, u32);
    };
    ($(#[$doc:meta])* $name:ident, $op2:literal, $par:ident, $t:ty) => {
        $(#[$doc])*
        #[inline]
        #[must_use]
        pub fn $name(va: u32) -> $t {
            // SAFETY: an address translation operation only writes PAR; the isb makes the
            // result visible to the following read.
            unsafe {
                core::arch::asm!(
                    concat!("mcr p15, 0, {0}, c7, c8, ", $op2),
                    "isb",
                    in(reg) va,
                    options(nostack, preserves_flags)
                );
            }
            $par.get()
        }
    };
}

ats!(
    /// `ATS1CPW`: translate with the PL1 write permission check.
    ats1cpw, "1");
ats!(
    /// `ATS1CUR`: translate with the PL0 (unprivileged) read permission check.
    ats1cur, "2");
ats!(
    /// `ATS1CUW`: translate with the PL0 (unprivileged) write permission check.
    ats1cuw, "3");

/// A 32-bit `PAR` after an `ATS1C**` operation, decoded.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ParResult {
    /// The translation succeeded.
    Ok {
        /// `PA[31:12]` (`PA[31:24]` for a supersection), shifted back into place.
        pa: u32,
        /// The translation came from a supersection (`PAR.SS`); then only `pa[31:24]` is
        /// meaningful (`PA[39:32]` may be in `PAR[23:16]` or lost).
        supersection: bool,
    },
    /// The translation aborted with this short-descriptor fault status (`FS[4:0]`).
    Fault {
        /// `FS[4:0]`: 0b00101/0b00111 translation, 0b01101/0b01111 permission,
        /// 0b01001/0b01011 domain, 0b00011/0b00110 access flag.
        status: u8,
    },
}

impl ParResult {
    /// Decodes a short-descriptor-format `PAR` value.
    #[must_use]
    pub const fn decode(par: u32) -> Self {
        if par & 1 != 0 {
            // PAR[5:1] = FS[4:0] (FS[3:0] in [4:1], FS[4] in [5]).
            ParResult::Fault {
                status: ((par >> 1) & 0x1f) as u8,
            }
        } else if par & 2 != 0 {
            ParResult::Ok {
                pa: par & 0xff00_0000,
                supersection: true,
            }
        } else {
            ParResult::Ok {
                pa: par & 0xffff_f000,
                supersection: false,
            }
        }
    }

    /// A translation fault (section or page).
    #[must_use]
    pub const fn is_translation_fault(self) -> bool {
        matches!(self, ParResult::Fault { status } if status == 0b00101 || status == 0b00111)
    }

    /// A permission fault (section or page).
    #[must_use]
    pub const fn is_permission_fault(self) -> bool {
        matches!(self, ParResult::Fault { status } if status == 0b01101 || status == 0b01111)
    }
}

ats!(
    /// `ATS1CPR` in the long-descriptor format: PL1 read check, 64-bit `PAR`.
    ats1cpr_64, "0", PAR_64, u64);
ats!(
    /// `ATS1CPW` in the long-descriptor format: PL1 write check, 64-bit `PAR`.
    ats1cpw_64, "1", PAR_64, u64);
ats!(
    /// `ATS1CUR` in the long-descriptor format: PL0 read check, 64-bit `PAR`.
    ats1cur_64, "2", PAR_64, u64);
ats!(
    /// `ATS1CUW` in the long-descriptor format: PL0 write check, 64-bit `PAR`.
    ats1cuw_64, "3", PAR_64, u64);

/// A 64-bit (long-descriptor format) `PAR` after an `ATS1C**` operation, decoded.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Par64Result {
    /// The translation succeeded.
    Ok {
        /// `PA[39:12]`, in place (the page of the output address).
        pa: u64,
        /// `ATTR`: the `MAIR` attribute byte of the mapping.
        attr: u8,
        /// `SH`: 0b00 non-shareable, 0b10 outer, 0b11 inner shareable.
        sh: u8,
    },
    /// The translation aborted with this long-descriptor fault status (`FST[5:0]`).
    Fault {
        /// `FST`: 0b0001LL translation, 0b0010LL access flag, 0b0011LL permission fault
        /// at level LL.
        status: u8,
    },
}

impl Par64Result {
    /// Decodes a long-descriptor-format `PAR` value (`PAR.LPAE`, bit 11, set).
    #[must_use]
    pub const fn decode(par: u64) -> Self {
        if par & 1 != 0 {
            Par64Result::Fault {
                status: ((par >> 1) & 0x3f) as u8,
            }
        } else {
            Par64Result::Ok {
                pa: par & 0xff_ffff_f000,
                attr: (par >> 56) as u8,
                sh: ((par >> 7) & 3) as u8,
            }
        }
    }

    /// A translation fault, at any level.
    #[must_use]
    pub const fn is_translation_fault(self) -> bool {
        matches!(self, Par64Result::Fault { status } if status >> 2 == 0b0001)
    }

    /// An access-flag fault, at any level.
    #[must_use]
    pub const fn is_access_flag_fault(self) -> bool {
        matches!(self, Par64Result::Fault { status } if status >> 2 == 0b0010)
    }

    /// A permission fault, at any level.
    #[must_use]
    pub const fn is_permission_fault(self) -> bool {
        matches!(self, Par64Result::Fault { status } if status >> 2 == 0b0011)
    }
}

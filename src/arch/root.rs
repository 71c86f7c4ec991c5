//! Typed translation-table roots, and the register values that bring the MMU up over one.
//!
//! A [`TableRoot`] is a table's physical address together with what it was built for: its
//! descriptor format and which part of the VA space it translates (the whole space, the
//! `TTBR0` half of a split, or the `TTBR1` half). Carrying that with the address lets the
//! crate refuse, with a typed error naming the mismatch, to load a table into a register
//! (or under a `TTBCR`) it was not built for: a `Layout::User { n: 2 }` table under
//! `TTBCR.N = 1` is walked with the wrong index width, and a kernel-half table in `TTBR0`
//! translates user addresses with kernel mappings. The address spaces of
//! [`crate::short`] and [`crate::lpae`] hand theirs out with `table_root()`.
//!
//! This module is the bottom layer's vocabulary: it knows no descriptor format's code,
//! only register layouts, so everything here is plain data and pure functions, compiled
//! (and tested) on every target. [`TableRoot::check_ttbr0`] is the check an activation
//! runs against the live `TTBCR`/`SCTLR`; [`MmuRegisters`] computes, and checks, every
//! value the bring-up (`crate::arch::mmu::bring_up`, `crate::arch::lpae::bring_up`)
//! writes, so that the ARM code only writes them in the architected order.

use super::error::ActivateError;
use crate::addr::PhysAddr;

/// `SCTLR.M`: the MMU is on.
pub const SCTLR_M: u32 = 1 << 0;
/// `SCTLR.C`: data and unified caches enabled.
pub const SCTLR_C: u32 = 1 << 2;
/// `SCTLR.Z`: branch prediction enabled.
pub const SCTLR_Z: u32 = 1 << 11;
/// `SCTLR.I`: instruction cache enabled.
pub const SCTLR_I: u32 = 1 << 12;
/// `SCTLR.TRE`: TEX remap (`PRRR`/`NMRR` give the memory types).
pub const SCTLR_TRE: u32 = 1 << 28;
/// `SCTLR.AFE`: `AP[0]` is an access flag (short descriptors).
pub const SCTLR_AFE: u32 = 1 << 29;
/// `TTBCR.EAE`: long descriptors.
const TTBCR_EAE: u32 = 1 << 31;
/// `TTBCR.PD0` (short descriptors): no walks through `TTBR0`.
const TTBCR_PD0: u32 = 1 << 4;
/// `TTBCR.EPD0` (long descriptors): no walks through `TTBR0`.
const TTBCR_EPD0: u32 = 1 << 7;
/// `TTBCR.EPD1` (long descriptors): no walks through `TTBR1`.
const TTBCR_EPD1: u32 = 1 << 23;
/// `DACR` with domain 0 a client (permissions checked), domains 1 to 15 no access.
pub const DACR_DOMAIN0_CLIENT: u32 = 0b01;

/// A table's descriptor format.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RootFormat {
    /// VMSAv7 short descriptors (`TTBCR.EAE = 0`).
    Short,
    /// Long descriptors, LPAE (`TTBCR.EAE = 1`).
    Lpae,
}

/// Which part of the VA space a root translates: the bottom layer's copy of
/// `crate::table::Layout` (same variants, same `n`: `TTBCR.N` for short descriptors,
/// `TTBCR.T0SZ` with `T1SZ = 0` for long ones; `t1sz`: `TTBCR.T1SZ` with `T0SZ = 0`, long
/// descriptors only).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RootLayout {
    /// All 4 GiB, through `TTBR0` with `n = 0`.
    Whole,
    /// The `TTBR0` half of the split `n`: a process.
    User {
        /// The split.
        n: u8,
    },
    /// The `TTBR1` half of the split `n`: the kernel.
    Kernel {
        /// The split.
        n: u8,
    },
    /// Long descriptors: the `TTBR0` part of the split `TTBCR.T1SZ = t1sz` (`T0SZ = 0`).
    UserLow {
        /// `TTBCR.T1SZ`.
        t1sz: u8,
    },
    /// Long descriptors: the `TTBR1` part of the split `TTBCR.T1SZ = t1sz`: the top
    /// `4 GiB >> t1sz`.
    KernelHigh {
        /// `TTBCR.T1SZ`.
        t1sz: u8,
    },
}

impl RootLayout {
    /// The `TTBCR.N` / `T0SZ` this layout was built for (0 for [`RootLayout::Whole`] and
    /// for the `T1SZ` splits; see [`RootLayout::sizes`]).
    #[must_use]
    pub const fn split(self) -> u8 {
        self.sizes().0
    }

    /// `(TTBCR.N or T0SZ, TTBCR.T1SZ)` this layout was built for.
    #[must_use]
    pub const fn sizes(self) -> (u8, u8) {
        match self {
            RootLayout::Whole => (0, 0),
            RootLayout::User { n } | RootLayout::Kernel { n } => (n, 0),
            RootLayout::UserLow { t1sz } | RootLayout::KernelHigh { t1sz } => (0, t1sz),
        }
    }
}

/// A translation table's physical address with its format and layout (see the module
/// docs). Built by the address spaces (`table_root()`), or by a kernel for a table it
/// built itself.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TableRoot {
    pa: PhysAddr,
    format: RootFormat,
    layout: RootLayout,
}

impl TableRoot {
    /// The root table at `pa`, of `format`, translating `layout`. Nothing is checked here;
    /// every use checks what it needs (and says which error it gives).
    #[must_use]
    pub const fn new(pa: PhysAddr, format: RootFormat, layout: RootLayout) -> Self {
        TableRoot { pa, format, layout }
    }

    /// The table's physical address.
    #[must_use]
    pub const fn pa(&self) -> PhysAddr {
        self.pa
    }

    /// Its descriptor format.
    #[must_use]
    pub const fn format(&self) -> RootFormat {
        self.format
    }

    /// The part of the VA space it translates.
    #[must_use]
    pub const fn layout(&self) -> RootLayout {
        self.layout
    }

    /// Whether this table may be loaded into `TTBR0` of a CPU whose `TTBCR` and `SCTLR`
    /// hold `ttbcr` and `sctlr`: the check of every typed activation, before anything is
    /// written.
    ///
    /// # Errors
    /// - [`ActivateError::FormatMismatch`]: `TTBCR.EAE` selects the other format;
    /// - [`ActivateError::WrongHalf`]: a kernel-half table (it belongs in `TTBR1`);
    /// - [`ActivateError::SplitMismatch`]: the layout's `n` (0 for a whole-space table)
    ///   is not the live `TTBCR.N` (short) / `TTBCR.T0SZ` (LPAE);
    /// - [`ActivateError::T1szMismatch`] (LPAE): the layout's `t1sz` (0 unless it is a
    ///   `T1SZ` split) is not the live `TTBCR.T1SZ`; a short-descriptor root with a
    ///   `T1SZ` layout is a [`ActivateError::FormatMismatch`];
    /// - [`ActivateError::AccessFlagEnabled`]: short descriptors with `SCTLR.AFE = 1` (the
    ///   crate's `AP` encodings assume `AFE = 0`; long descriptors always have an access
    ///   flag and ignore `AFE`).
    pub const fn check_ttbr0(&self, ttbcr: u32, sctlr: u32) -> Result<(), ActivateError> {
        let lpae = ttbcr & TTBCR_EAE != 0;
        match (self.format, lpae) {
            (RootFormat::Short, true) | (RootFormat::Lpae, false) => {
                return Err(ActivateError::FormatMismatch)
            }
            _ => {}
        }
        if let RootLayout::Kernel { .. } | RootLayout::KernelHigh { .. } = self.layout {
            return Err(ActivateError::WrongHalf);
        }
        let (table, table_t1) = self.layout.sizes();
        if !lpae && table_t1 != 0 {
            return Err(ActivateError::FormatMismatch);
        }
        // `TTBCR.N` and `TTBCR.T0SZ` are both bits [2:0].
        let live = (ttbcr & 7) as u8;
        if table != live {
            return Err(ActivateError::SplitMismatch { table, ttbcr: live });
        }
        // `TTBCR.T1SZ` is bits [18:16] (long descriptors).
        let live_t1 = ((ttbcr >> 16) & 7) as u8;
        if lpae && table_t1 != live_t1 {
            return Err(ActivateError::T1szMismatch {
                table: table_t1,
                ttbcr: live_t1,
            });
        }
        if !lpae && sctlr & SCTLR_AFE != 0 {
            return Err(ActivateError::AccessFlagEnabled);
        }
        Ok(())
    }

    /// The split of a kernel root (one the bring-up loads), as `(N or T0SZ, T1SZ)`:
    /// `(0, 0)` for a whole-space table, `(n, 0)` for the kernel half of a split, `(0,
    /// t1sz)` for the kernel part of a `T1SZ` split (long descriptors only).
    const fn kernel_split(&self) -> Result<(u8, u8), ActivateError> {
        match self.layout {
            RootLayout::Whole => Ok((0, 0)),
            RootLayout::Kernel { n } if n >= 1 && n <= 7 => Ok((n, 0)),
            RootLayout::KernelHigh { .. } if matches!(self.format, RootFormat::Short) => {
                Err(ActivateError::FormatMismatch)
            }
            RootLayout::KernelHigh { t1sz } if t1sz >= 1 && t1sz <= 7 => Ok((0, t1sz)),
            RootLayout::Kernel { n } | RootLayout::KernelHigh { t1sz: n } => {
                Err(ActivateError::InvalidSplit(n))
            }
            RootLayout::User { .. } | RootLayout::UserLow { .. } => Err(ActivateError::WrongHalf),
        }
    }
}

/// Every register value the MMU bring-up writes, computed (and checked) before anything
/// is written. `crate::arch::mmu::bring_up` / `crate::arch::lpae::bring_up` write them in
/// this order: `mem_attrs` (`PRRR`/`NMRR`, or `MAIR0`/`MAIR1`), `DACR`, `TTBCR`, `TTBR1`,
/// `TTBR0`, `CONTEXTIDR`, `isb`, then `TLBIALL`, `BPIALL`, `ICIALLU`, `dsb`, `isb`, then
/// `SCTLR`, then `dsb`, `isb`.
///
/// The state it leaves: the kernel's table in `TTBR1` (with a split) and `TTBR0` parked
/// (on the kernel's table; with a split also `TTBCR.PD0` / `EPD0` set, so nothing below
/// the split is walked until a process is activated), ASID 0, the MMU and caches on. That
/// is the parked state the context switch ([`crate::arch::switch`]) starts from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MmuRegisters {
    /// `PRRR`, `NMRR` (short descriptors) or `MAIR0`, `MAIR1` (long descriptors).
    pub mem_attrs: [u32; 2],
    /// `DACR`: [`DACR_DOMAIN0_CLIENT`]. The crate's short descriptors all use domain 0,
    /// and a client domain is what makes their `AP` bits checked; long descriptors have
    /// no domains and ignore it.
    pub dacr: u32,
    /// `TTBCR`.
    pub ttbcr: u32,
    /// `TTBR0` (32-bit value in the low word for short descriptors).
    pub ttbr0: u64,
    /// `TTBR1`.
    pub ttbr1: u64,
    /// `CONTEXTIDR`: 0 (ASID 0 tags no mapping; the first activation sets one).
    pub contextidr: u32,
    /// `SCTLR`: the value it had, with `M`, `C`, `I`, `Z` and `TRE` set and `AFE` clear.
    pub sctlr: u32,
}

/// `SCTLR` after the bring-up: MMU, data and instruction caches, branch prediction and TEX
/// remap on; `AFE = 0`, which the crate's short-descriptor permissions are written for
/// (long descriptors ignore `TRE` and `AFE`). Every other bit is kept.
const fn sctlr_on(sctlr: u32) -> u32 {
    (sctlr | SCTLR_M | SCTLR_C | SCTLR_I | SCTLR_Z | SCTLR_TRE) & !SCTLR_AFE
}

impl MmuRegisters {
    /// The short-descriptor bring-up over `kernel` (a whole-space table, `n = 0`, or the
    /// kernel half of a split): `walk` is the low bits of `TTBRn` for this core (its walk
    /// attributes, [`crate::arch::switch::ShortWalk`]), `remap` the `PRRR`/`NMRR` values, `sctlr`
    /// the live `SCTLR`.
    ///
    /// # Errors
    /// [`ActivateError::MmuAlreadyOn`] if `sctlr` has `M` set; [`ActivateError::FormatMismatch`]
    /// for a long-descriptor root; [`ActivateError::WrongHalf`] for a process (`User`)
    /// table; [`ActivateError::InvalidSplit`] for a kernel split outside 1..=7;
    /// [`ActivateError::BadTableBase`] for a root that is not 16 KiB-aligned below 4 GiB.
    pub const fn short(
        kernel: &TableRoot,
        walk: u32,
        remap: [u32; 2],
        sctlr: u32,
    ) -> Result<Self, ActivateError> {
        if sctlr & SCTLR_M != 0 {
            return Err(ActivateError::MmuAlreadyOn);
        }
        if !matches!(kernel.format, RootFormat::Short) {
            return Err(ActivateError::FormatMismatch);
        }
        let n = match kernel.kernel_split() {
            Ok((n, _)) => n,
            Err(e) => return Err(e),
        };
        let pa = kernel.pa.as_u64();
        if !kernel.pa.is_aligned(16384) || pa >= 1 << 32 {
            return Err(ActivateError::BadTableBase(kernel.pa));
        }
        let ttbr = (pa as u32 | (walk & 0x7f)) as u64;
        let ttbcr = if n > 0 { n as u32 | TTBCR_PD0 } else { 0 };
        Ok(MmuRegisters {
            mem_attrs: remap,
            dacr: DACR_DOMAIN0_CLIENT,
            ttbcr,
            ttbr0: ttbr,
            ttbr1: ttbr,
            contextidr: 0,
            sctlr: sctlr_on(sctlr),
        })
    }

    /// The long-descriptor bring-up over `kernel`: `shareable_walks` says whether this
    /// core's walks are inner shareable (it takes part in coherency), `mair` is the
    /// `MAIR0`/`MAIR1` values, `sctlr` the live `SCTLR`. `TTBCR`: `EAE = 1`,
    /// `T0SZ = n`, `T1SZ = 0` (or, for a [`RootLayout::KernelHigh`] root, `T0SZ = 0`,
    /// `T1SZ = t1sz`), `A1 = 0` (the ASID is in `TTBR0`), walks write-back
    /// write-allocate, `EPD0 = 1` with a split (parked), `EPD1 = 1` without one (`TTBR1`
    /// then translates nothing: it only names the table `TTBR0` is parked on).
    ///
    /// # Errors
    /// As [`MmuRegisters::short`], for a short-descriptor root `FormatMismatch`, and
    /// [`ActivateError::BadTableBase`] for a root that is not 32-byte aligned below 1 TiB.
    pub const fn lpae(
        kernel: &TableRoot,
        shareable_walks: bool,
        mair: [u32; 2],
        sctlr: u32,
    ) -> Result<Self, ActivateError> {
        if sctlr & SCTLR_M != 0 {
            return Err(ActivateError::MmuAlreadyOn);
        }
        if !matches!(kernel.format, RootFormat::Lpae) {
            return Err(ActivateError::FormatMismatch);
        }
        let (n, t1sz) = match kernel.kernel_split() {
            Ok(sizes) => sizes,
            Err(e) => return Err(e),
        };
        let pa = kernel.pa.as_u64();
        // `TTBR1` holds a root of `4 GiB >> T1SZ`: aligned to `2^(5 - T1SZ)` bytes for a
        // level-1 root (`T1SZ` 0 or 1), `2^(14 - T1SZ)` for a level-2 one. (With
        // `T0SZ = n`, `T1SZ = 0`: a 4-entry level-1 table, 32 bytes.)
        let align = if t1sz <= 1 {
            32 >> t1sz
        } else {
            1 << (14 - t1sz)
        };
        if !kernel.pa.is_aligned(align) || pa >= 1 << 40 {
            return Err(ActivateError::BadTableBase(kernel.pa));
        }
        let sh: u32 = if shareable_walks { 0b11 } else { 0b00 };
        // IRGN0/ORGN0/IRGN1/ORGN1 = 0b01 (write-back write-allocate), SH0/SH1 = sh.
        let walks = (1 << 8) | (1 << 10) | (sh << 12) | (1 << 24) | (1 << 26) | (sh << 28);
        let park = if n > 0 || t1sz > 0 {
            TTBCR_EPD0
        } else {
            TTBCR_EPD1
        };
        Ok(MmuRegisters {
            mem_attrs: mair,
            dacr: DACR_DOMAIN0_CLIENT,
            ttbcr: TTBCR_EAE | walks | park | n as u32 | (t1sz as u32) << 16,
            ttbr0: pa,
            ttbr1: pa,
            contextidr: 0,
            sctlr: sctlr_on(sctlr),
        })
    }
}

/// [`TableRoot::check_ttbr0`] against this CPU's live `TTBCR` and `SCTLR`.
///
/// # Errors
/// As [`TableRoot::check_ttbr0`].
#[cfg(target_arch = "arm")]
pub fn check_live(root: &TableRoot) -> Result<(), ActivateError> {
    use tock_registers::interfaces::Readable;
    root.check_ttbr0(super::cp15::TTBCR.get(), super::cp15::SCTLR.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KERNEL_PA: PhysAddr = PhysAddr::new(0x4010_0000);

    fn root(format: RootFormat, layout: RootLayout) -> TableRoot {
        TableRoot::new(KERNEL_PA, format, layout)
    }

    #[test]
    fn activation_refuses_every_mismatch_by_name() {
        use RootFormat::{Lpae, Short};
        let user2 = root(Short, RootLayout::User { n: 2 });
        // The case of the issue: a `User { n: 2 }` table under `TTBCR.N = 1` (or 0).
        assert_eq!(
            user2.check_ttbr0(1, 0),
            Err(ActivateError::SplitMismatch { table: 2, ttbcr: 1 })
        );
        assert_eq!(
            user2.check_ttbr0(0, 0),
            Err(ActivateError::SplitMismatch { table: 2, ttbcr: 0 })
        );
        assert_eq!(user2.check_ttbr0(2 | TTBCR_PD0, SCTLR_M), Ok(()));
        // A whole-space table needs `N = 0`.
        let whole = root(Short, RootLayout::Whole);
        assert_eq!(whole.check_ttbr0(0, 0), Ok(()));
        assert_eq!(
            whole.check_ttbr0(3, 0),
            Err(ActivateError::SplitMismatch { table: 0, ttbcr: 3 })
        );
        // The kernel half never goes into TTBR0.
        assert_eq!(
            root(Short, RootLayout::Kernel { n: 2 }).check_ttbr0(2, 0),
            Err(ActivateError::WrongHalf)
        );
        // Formats: EAE decides.
        assert_eq!(
            user2.check_ttbr0(TTBCR_EAE | 2, 0),
            Err(ActivateError::FormatMismatch)
        );
        let lpae2 = root(Lpae, RootLayout::User { n: 2 });
        assert_eq!(lpae2.check_ttbr0(2, 0), Err(ActivateError::FormatMismatch));
        assert_eq!(lpae2.check_ttbr0(TTBCR_EAE | TTBCR_EPD0 | 2, 0), Ok(()));
        assert_eq!(
            lpae2.check_ttbr0(TTBCR_EAE | 1, 0),
            Err(ActivateError::SplitMismatch { table: 2, ttbcr: 1 })
        );
        // AFE: refused for short descriptors, irrelevant for long ones.
        assert_eq!(
            user2.check_ttbr0(2, SCTLR_AFE),
            Err(ActivateError::AccessFlagEnabled)
        );
        assert_eq!(lpae2.check_ttbr0(TTBCR_EAE | 2, SCTLR_AFE), Ok(()));
    }

    #[test]
    fn short_bring_up_values() {
        let walk = 0x6a;
        let remap = [0xaaaa_aaaa, 0x5555_5555];
        let sctlr_reset = 0x00c5_0078 | SCTLR_AFE; // some reset value, AFE set
        let split = root(RootFormat::Short, RootLayout::Kernel { n: 2 });
        let r = MmuRegisters::short(&split, walk, remap, sctlr_reset).unwrap();
        assert_eq!(r.mem_attrs, remap);
        assert_eq!(r.dacr, 0b01, "domain 0 client, the rest no access");
        assert_eq!(
            r.ttbcr,
            2 | TTBCR_PD0,
            "N = 2, TTBR0 parked by PD0, EAE = 0"
        );
        assert_eq!(r.ttbr1, 0x4010_006a);
        assert_eq!(r.ttbr0, r.ttbr1);
        assert_eq!(r.contextidr, 0);
        assert_eq!(
            r.sctlr,
            (0x00c5_0078 | SCTLR_M | SCTLR_C | SCTLR_I | SCTLR_Z | SCTLR_TRE),
            "M, C, I, Z, TRE on, AFE off, the rest kept"
        );
        let whole = root(RootFormat::Short, RootLayout::Whole);
        let r = MmuRegisters::short(&whole, walk, remap, 0).unwrap();
        assert_eq!(
            r.ttbcr, 0,
            "N = 0, no PD0: TTBR0 parked on the kernel table"
        );
        assert_eq!((r.ttbr0, r.ttbr1), (0x4010_006a, 0x4010_006a));
    }

    #[test]
    fn short_bring_up_refusals() {
        let ok = |layout, pa: u64, sctlr| {
            MmuRegisters::short(
                &TableRoot::new(PhysAddr::new(pa), RootFormat::Short, layout),
                0,
                [0, 0],
                sctlr,
            )
            .map(|_| ())
        };
        let k2 = RootLayout::Kernel { n: 2 };
        assert_eq!(
            ok(k2, 0x4010_0000, SCTLR_M),
            Err(ActivateError::MmuAlreadyOn)
        );
        assert_eq!(
            ok(RootLayout::User { n: 2 }, 0x4010_0000, 0),
            Err(ActivateError::WrongHalf)
        );
        assert_eq!(
            ok(RootLayout::Kernel { n: 8 }, 0x4010_0000, 0),
            Err(ActivateError::InvalidSplit(8))
        );
        assert_eq!(
            ok(RootLayout::Kernel { n: 0 }, 0x4010_0000, 0),
            Err(ActivateError::InvalidSplit(0))
        );
        assert_eq!(
            ok(k2, 0x4010_1000, 0),
            Err(ActivateError::BadTableBase(PhysAddr::new(0x4010_1000)))
        );
        assert_eq!(
            ok(k2, 1 << 32, 0),
            Err(ActivateError::BadTableBase(PhysAddr::new(1 << 32)))
        );
        assert_eq!(
            MmuRegisters::short(&root(RootFormat::Lpae, k2), 0, [0, 0], 0),
            Err(ActivateError::FormatMismatch)
        );
    }

    #[test]
    fn lpae_bring_up_values() {
        let mair = [0x1234, 0x5678];
        let split = root(RootFormat::Lpae, RootLayout::Kernel { n: 2 });
        let r = MmuRegisters::lpae(&split, true, mair, 0).unwrap();
        assert_eq!(r.mem_attrs, mair);
        // EAE, T0SZ = 2, EPD0 (parked), walks WBWA inner shareable, T1SZ = 0, A1 = 0.
        assert_eq!(r.ttbcr, 0xb500_3582);
        assert_eq!((r.ttbr0, r.ttbr1), (0x4010_0000, 0x4010_0000));
        let whole = root(RootFormat::Lpae, RootLayout::Whole);
        let r = MmuRegisters::lpae(&whole, false, mair, 0).unwrap();
        // EAE, T0SZ = 0, EPD1 (TTBR1 only names the parking table), non-shareable walks.
        assert_eq!(r.ttbcr, 0x8580_0500);
        assert_eq!(
            MmuRegisters::lpae(&root(RootFormat::Short, RootLayout::Whole), true, mair, 0),
            Err(ActivateError::FormatMismatch)
        );
        assert_eq!(
            MmuRegisters::lpae(&split, true, mair, SCTLR_M),
            Err(ActivateError::MmuAlreadyOn)
        );
        let far = TableRoot::new(PhysAddr::new(1 << 40), RootFormat::Lpae, RootLayout::Whole);
        assert_eq!(
            MmuRegisters::lpae(&far, true, mair, 0),
            Err(ActivateError::BadTableBase(PhysAddr::new(1 << 40)))
        );
    }

    #[test]
    fn t1sz_roots_are_checked_against_both_sizes() {
        use RootFormat::{Lpae, Short};
        let t1 = |t1sz: u32| TTBCR_EAE | t1sz << 16;
        let user = root(Lpae, RootLayout::UserLow { t1sz: 2 });
        assert_eq!(user.check_ttbr0(t1(2) | TTBCR_EPD0, 0), Ok(()));
        for (live, got) in [(0, 0), (1, 1), (3, 3)] {
            assert_eq!(
                user.check_ttbr0(t1(live), 0),
                Err(ActivateError::T1szMismatch {
                    table: 2,
                    ttbcr: got
                })
            );
        }
        // A whole-space or `T0SZ` table under a `T1SZ` split: TTBR0 would stop at 3 GiB.
        for layout in [RootLayout::Whole, RootLayout::User { n: 1 }] {
            let r = root(Lpae, layout);
            assert!(
                matches!(
                    r.check_ttbr0(t1(2) | layout.split() as u32, 0),
                    Err(ActivateError::T1szMismatch { table: 0, ttbcr: 2 })
                ),
                "{layout:?}"
            );
        }
        // The kernel part belongs in TTBR1; short descriptors have no T1SZ layouts.
        assert_eq!(
            root(Lpae, RootLayout::KernelHigh { t1sz: 2 }).check_ttbr0(t1(2), 0),
            Err(ActivateError::WrongHalf)
        );
        assert_eq!(
            root(Short, RootLayout::UserLow { t1sz: 2 }).check_ttbr0(0, 0),
            Err(ActivateError::FormatMismatch)
        );
    }

    #[test]
    fn lpae_bring_up_over_a_t1sz_kernel() {
        use RootFormat::{Lpae, Short};
        let k = root(Lpae, RootLayout::KernelHigh { t1sz: 2 });
        let r = MmuRegisters::lpae(&k, true, [1, 2], 0).unwrap();
        assert_eq!(r.ttbcr & 7, 0, "T0SZ");
        assert_eq!((r.ttbcr >> 16) & 7, 2, "T1SZ");
        assert_ne!(r.ttbcr & TTBCR_EPD0, 0, "TTBR0 parked");
        assert_eq!(r.ttbcr & TTBCR_EPD1, 0, "TTBR1 walks the kernel");
        assert_eq!(r.ttbr1, KERNEL_PA.as_u64());
        // The parked state is what a process activation under this split accepts.
        let user = root(Lpae, RootLayout::UserLow { t1sz: 2 });
        assert_eq!(user.check_ttbr0(r.ttbcr, r.sctlr), Ok(()));
        // A level-2 root of `4 GiB >> 2` needs 2^(14 - 2) = 4 KiB alignment; a 2-entry
        // level-1 root (`T1SZ = 1`) 16 bytes.
        let odd = TableRoot::new(
            PhysAddr::new(0x4010_0800),
            Lpae,
            RootLayout::KernelHigh { t1sz: 2 },
        );
        assert_eq!(
            MmuRegisters::lpae(&odd, true, [1, 2], 0),
            Err(ActivateError::BadTableBase(PhysAddr::new(0x4010_0800)))
        );
        let t1 = TableRoot::new(
            PhysAddr::new(0x4010_0010),
            Lpae,
            RootLayout::KernelHigh { t1sz: 1 },
        );
        assert!(MmuRegisters::lpae(&t1, true, [1, 2], 0).is_ok());
        for bad in [0, 8] {
            assert_eq!(
                MmuRegisters::lpae(
                    &root(Lpae, RootLayout::KernelHigh { t1sz: bad }),
                    true,
                    [1, 2],
                    0
                ),
                Err(ActivateError::InvalidSplit(bad))
            );
        }
        assert_eq!(
            MmuRegisters::short(
                &root(Short, RootLayout::KernelHigh { t1sz: 2 }),
                0,
                [0, 0],
                0
            ),
            Err(ActivateError::FormatMismatch)
        );
    }
}

//! Why loading a table root into the MMU was refused ([`ActivateError`]); re-exported as
//! `crate::error::ActivateError`.

use core::fmt;

use crate::addr::PhysAddr;

/// Why switching to an address space was refused. Nothing was changed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ActivateError {
    /// ASID 0 is reserved for the switch sequence itself and never tags a mapping.
    ReservedAsid,
    /// The table base is above 4 GiB or not aligned as the current `TTBCR.N` requires.
    BadTableBase(PhysAddr),
    /// `TTBCR.N` must be 0..=7.
    InvalidSplit(u8),
    /// The CPU walks the other descriptor format (`TTBCR.EAE` set for a short-descriptor
    /// switch, clear for a long-descriptor one).
    FormatMismatch,
    /// Without a split (`TTBCR.N = 0` / `T0SZ = 0`) `TTBR0` is parked on the kernel's table
    /// in `TTBR1` while the ASID changes, and `TTBR1` holds none (base 0): load it first
    /// (`crate::arch::mmu::set_split` with `n = 0` does).
    NoParkingTable,
    /// The table was built for another split than the one the CPU runs: `table` is the
    /// `n` of its layout (0 for a whole-VA-space table), `ttbcr` the live `TTBCR.N` (short
    /// descriptors) or `TTBCR.T0SZ` (LPAE). Loading it would walk it with the wrong index
    /// width (a wrong translation, or a root the CPU cannot use).
    SplitMismatch {
        /// The split the table's layout was built for.
        table: u8,
        /// The split the CPU's `TTBCR` holds.
        ttbcr: u8,
    },
    /// Long descriptors: the table was built for another `TTBCR.T1SZ` than the CPU runs
    /// (`table` is the layout's `t1sz`, 0 unless it is a `T1SZ` split; `ttbcr` the live
    /// `T1SZ`). With another `T1SZ` the `TTBR0` region ends elsewhere: kernel addresses
    /// would be looked up in a process table, or process addresses in the kernel's.
    T1szMismatch {
        /// The `T1SZ` the table's layout was built for.
        table: u8,
        /// The `TTBCR.T1SZ` the CPU holds.
        ttbcr: u8,
    },
    /// The table is for the other translation table base register: a kernel-half table
    /// (`Layout::Kernel`, loaded once into `TTBR1`) given to a context switch, or a
    /// process table (`Layout::User`) given to the MMU bring-up as the kernel's.
    WrongHalf,
    /// `SCTLR.AFE` is set: `AP[0]` is then an access flag, and the crate's access
    /// permissions (written for `AFE = 0`) would mean something else (a kernel-only
    /// read/write page user-visible once its access flag is set). The bring-up programs
    /// `AFE = 0`; an activation refuses a CPU that runs with it set.
    AccessFlagEnabled,
    /// The MMU bring-up was asked for with the MMU already on (`SCTLR.M = 1`): it programs
    /// every translation register from scratch, which is only safe with translation off.
    MmuAlreadyOn,
    /// A long-descriptor bring-up on a CPU without LPAE (`ID_MMFR0.VMSA < 5`).
    NoLpae,
}

impl fmt::Display for ActivateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ActivateError::ReservedAsid => f.write_str("ASID 0 is reserved"),
            ActivateError::BadTableBase(pa) => {
                write!(f, "{pa} cannot be a table base with the current TTBCR")
            }
            ActivateError::InvalidSplit(n) => write!(f, "split n = {n} is not in 0..=7"),
            ActivateError::FormatMismatch => {
                f.write_str("the table's descriptor format is not the one TTBCR.EAE selects")
            }
            ActivateError::NoParkingTable => {
                f.write_str("TTBCR.N = 0 and TTBR1 holds no kernel table to park TTBR0 on")
            }
            ActivateError::T1szMismatch { table, ttbcr } => write!(
                f,
                "table built for TTBCR.T1SZ = {table}, the CPU runs T1SZ = {ttbcr}"
            ),
            ActivateError::SplitMismatch { table, ttbcr } => write!(
                f,
                "the table was built for split n = {table}, the CPU runs n = {ttbcr}"
            ),
            ActivateError::WrongHalf => {
                f.write_str("the table is for the other translation table base register")
            }
            ActivateError::AccessFlagEnabled => {
                f.write_str("SCTLR.AFE is set; the crate's permissions assume AFE = 0")
            }
            ActivateError::MmuAlreadyOn => f.write_str("the MMU is already on"),
            ActivateError::NoLpae => f.write_str("this CPU has no LPAE"),
        }
    }
}

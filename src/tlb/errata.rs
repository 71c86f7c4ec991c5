//! CPU errata that change how the inner-shareable backend issues TLB maintenance.
//!
//! They are on by default: `Cp15Tlb::detect` (ARM; [`super::Armv7Tlb::for_cpu`] in
//! general) records the CPU it runs on into the kernel's [`SystemErrata`] and the backend
//! applies what *every* recorded CPU needs, read at each operation. A system is affected
//! when any of its CPUs is: on big.LITTLE, a kernel booting on a Cortex-A7 must still
//! apply the Cortex-A15s' 798181 workaround, so each CPU calls
//! `SystemErrata::record_this_cpu` (ARM) as it comes up (before it runs any shared address
//! space), and [`ErrataConfig::merge`] is the union. Opting out is explicit
//! ([`super::Armv7Tlb::without_errata`], or [`super::Armv7Tlb::with_errata`] with a fixed
//! configuration). The decisions are pure functions of the `MIDR` and `REVIDR` values,
//! so host tests cover every revision boundary.
//!
//! The full 798181 workaround needs an IPI, which the crate cannot send: the kernel gives
//! its [`IpiHook`] once, to [`SystemErrata::new`]. If a CPU that needs the full workaround
//! is recorded into a system without a hook, recording returns
//! [`ErrataError::IpiHookRequired`] (and keeps the dummy-invalidate part), and detection
//! of an inner-shareable backend fails with it: never a silent partial workaround.
//!
//! - **Cortex-A9 erratum 720789** (r0pX and r1pX): `TLBIASIDIS` and `TLBIMVAIS` may
//!   broadcast a corrupted ASID, so other CPUs invalidate the wrong entries. Workaround:
//!   never broadcast an ASID. An ASID flush becomes `TLBIALLIS`, a by-VA flush becomes
//!   `TLBIMVAAIS` (the VA for every ASID). Both over-invalidate, never under-invalidate.
//! - **Cortex-A15 erratum 798181** (r0p0..r3pN unless `REVIDR` reports a fix, and
//!   Brahma-B15 r0p0..r0p2): a broadcast TLB invalidate followed by `dsb ish` may not yet have taken
//!   effect for an access in flight on another CPU. Workaround, once per batch after its
//!   invalidates: a dummy `TLBIMVAIS` for VA 0 / ASID 0 and another `dsb ish` (the
//!   *partial* variant, enough with the first ECO fix), and in the *full* variant also an
//!   IPI to the other CPUs that may use the affected translations, each executing a `dmb`
//!   before answering. The crate cannot send IPIs: the kernel supplies an [`IpiHook`].
//!   `REVIDR` bit 4 (the ECO fix, from r2p2) and bit 9 (its update, from r2p4) say which
//!   variant a CPU needs, as Linux's `erratum_a15_798181_init` reads them: bit 4 set means
//!   the partial workaround (even with bit 9); on r2p4..r3p2 bit 9 *alone* means not
//!   affected, and from r3p3 bit 9 means not affected, its absence partial; r2p2/r2p3 do
//!   not define bit 9 (see [`a15_798181`] for the whole table). (A CPU that does not implement `REVIDR` reads `MIDR` at
//!   its encoding, as QEMU's models do; only Cortex-A15 r2p2..r3pN consult it, and those
//!   implement it. QEMU's Cortex-A15 is r4p0: not affected.)

use core::sync::atomic::{AtomicU8, Ordering};

use tock_registers::LocalRegisterCopy;

use super::select::{
    MainId, IMPLEMENTER_ARM, IMPLEMENTER_BROADCOM, PART_BRAHMA_B15, PART_CORTEX_A15, PART_CORTEX_A9,
};
use super::Asid;
pub use crate::arch::cpu::a9_754322_affected;
use crate::arch::fields::REVIDR_BITS;

/// What the Cortex-A15 798181 workaround must do on a CPU.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum A15Erratum798181 {
    /// Not affected (another CPU, r4p0 or later, or the updated ECO fix alone reported).
    NotAffected,
    /// Dummy `TLBIMVAIS` + `dsb ish` after each batch.
    Partial,
    /// The partial workaround plus an IPI to the other CPUs using the translations.
    Full,
}

/// Whether a CPU with this `MIDR` has Cortex-A9 erratum 720789 (Cortex-A9 before r2p0).
#[must_use]
pub fn a9_720789_affected(midr: u32) -> bool {
    let id = MainId::from_midr(midr);
    id.is(IMPLEMENTER_ARM, PART_CORTEX_A9) && id.variant < 2
}

/// Which 798181 workaround a CPU with this `MIDR` and `REVIDR` needs.
///
/// - Cortex-A15 r0p0..r2p1: full (no ECO fix exists for them);
/// - r2p2, r2p3: partial if `REVIDR[4]` reports the ECO fix, else full (`REVIDR[9]` is
///   not defined on these revisions and is ignored);
/// - r2p4..r3p2: full if neither `REVIDR[4]` nor `REVIDR[9]` is set, partial if
///   `REVIDR[4]` is set (with or without bit 9), not affected with `REVIDR[9]` alone;
/// - r3p3 up to r4p0: partial unless `REVIDR[9]` is set;
/// - r4p0 and later: not affected;
/// - Brahma-B15 r0p0..r0p2: full.
#[must_use]
pub fn a15_798181(midr: u32, revidr: u32) -> A15Erratum798181 {
    let id = MainId::from_midr(midr);
    let revidr = LocalRegisterCopy::<u32, REVIDR_BITS::Register>::new(revidr);
    let fix = revidr.is_set(REVIDR_BITS::A15_798181_FIX);
    let fix_update = revidr.is_set(REVIDR_BITS::A15_798181_FIX_UPDATE);
    if id.is(IMPLEMENTER_BROADCOM, PART_BRAHMA_B15) {
        return if id.rev() <= (0, 2) {
            A15Erratum798181::Full
        } else {
            A15Erratum798181::NotAffected
        };
    }
    if !id.is(IMPLEMENTER_ARM, PART_CORTEX_A15) {
        return A15Erratum798181::NotAffected;
    }
    let rev = id.rev();
    if rev < (2, 2) {
        A15Erratum798181::Full
    } else if rev < (2, 4) {
        if fix {
            A15Erratum798181::Partial
        } else {
            A15Erratum798181::Full
        }
    } else if rev < (3, 3) {
        match (fix, fix_update) {
            (false, false) => A15Erratum798181::Full,
            (true, _) => A15Erratum798181::Partial,
            (false, true) => A15Erratum798181::NotAffected,
        }
    } else if rev < (4, 0) {
        if fix_update {
            A15Erratum798181::NotAffected
        } else {
            A15Erratum798181::Partial
        }
    } else {
        A15Erratum798181::NotAffected
    }
}

/// Which CPUs the full 798181 workaround must interrupt after a batch.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum IpiTarget {
    /// Every batch invalidate was for this one ASID: the other CPUs that run (or may hold
    /// translations of) this ASID. (Global mappings are invalidated with
    /// `invalidate_va_all_asids`, which makes the target [`IpiTarget::AllCpus`].)
    Asid(Asid),
    /// The batch touched global entries, several ASIDs or everything: all other CPUs.
    AllCpus,
}

/// The kernel's IPI for the full 798181 workaround: it must interrupt the other CPUs
/// named by the target and return only after each has executed a `dmb` (an empty IPI
/// handler does, on exception entry and return in practice; a `dmb` in the handler makes
/// it explicit). Called once per completed batch that issued a broadcast TLB invalidate,
/// after the dummy invalidate and its `dsb ish`.
pub type IpiHook = fn(IpiTarget);

/// How the 798181 workaround is applied.
#[derive(Clone, Copy, Debug)]
pub enum A15Workaround {
    /// Not applied.
    Off,
    /// Dummy `TLBIMVAIS` (VA 0, ASID 0) + `dsb ish` once per batch.
    DummyInvalidate,
    /// The dummy invalidate, then the kernel's IPI.
    DummyInvalidateAndIpi(IpiHook),
}

impl PartialEq for A15Workaround {
    fn eq(&self, other: &Self) -> bool {
        // Hooks compare as equal whatever function they point at: the variant is what
        // matters for a configuration (and fn pointer comparison is unreliable anyway).
        core::mem::discriminant(self) == core::mem::discriminant(other)
    }
}

/// The errata workarounds a backend applies. Only the [`Shareability::InnerShareable`]
/// backend is affected: both errata concern broadcast maintenance.
///
/// [`Shareability::InnerShareable`]: super::Shareability::InnerShareable
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct ErrataConfig {
    /// Cortex-A9 720789: no ASID in broadcast operations.
    pub a9_720789: bool,
    /// Cortex-A9 754322: a full `dsb` before each `CONTEXTIDR` write. Listed for the
    /// record (and for merging a system's CPUs): the short-descriptor switch
    /// ([`crate::arch::switch::switch_short`]) reads `MIDR` and applies it on the CPU it runs
    /// on, whatever this says, since the erratum is in that CPU's own walker.
    pub a9_754322: bool,
    /// Cortex-A15 798181.
    pub a15_798181: A15Workaround,
}

/// [`ErrataConfig::for_cpu`] could not build a complete configuration.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ErrataError {
    /// The CPU needs the full 798181 workaround, which needs the kernel's IPI hook.
    IpiHookRequired,
}

impl core::fmt::Display for ErrataError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ErrataError::IpiHookRequired => f.write_str(
                "this CPU needs the full Cortex-A15 798181 workaround, which needs an IPI hook",
            ),
        }
    }
}

impl ErrataConfig {
    /// No workarounds.
    pub const NONE: ErrataConfig = ErrataConfig {
        a9_720789: false,
        a9_754322: false,
        a15_798181: A15Workaround::Off,
    };

    /// The workarounds a CPU with this `MIDR` and `REVIDR` needs. `ipi` is the kernel's
    /// IPI hook (used only if the CPU needs the full 798181 workaround; a uniprocessor
    /// kernel passes `None` and gets an error only on a CPU that needs it).
    ///
    /// # Errors
    /// [`ErrataError::IpiHookRequired`] if the CPU needs the full 798181 workaround and
    /// `ipi` is `None`. (A kernel that runs on one CPU may then choose
    /// [`A15Workaround::DummyInvalidate`] itself, or the `Local` scope, which is not
    /// affected.)
    pub fn for_cpu(midr: u32, revidr: u32, ipi: Option<IpiHook>) -> Result<Self, ErrataError> {
        let a15_798181 = match (a15_798181(midr, revidr), ipi) {
            (A15Erratum798181::NotAffected, _) => A15Workaround::Off,
            (A15Erratum798181::Partial, _) => A15Workaround::DummyInvalidate,
            (A15Erratum798181::Full, Some(hook)) => A15Workaround::DummyInvalidateAndIpi(hook),
            (A15Erratum798181::Full, None) => return Err(ErrataError::IpiHookRequired),
        };
        Ok(Self {
            a9_720789: a9_720789_affected(midr),
            a9_754322: a9_754322_affected(midr),
            a15_798181,
        })
    }

    /// [`ErrataConfig::for_cpu`] with this CPU's `MIDR` and `REVIDR`.
    ///
    /// # Errors
    /// As [`ErrataConfig::for_cpu`].
    #[cfg(target_arch = "arm")]
    pub fn detect(ipi: Option<IpiHook>) -> Result<Self, ErrataError> {
        use crate::arch::cp15::{MIDR, REVIDR};
        use tock_registers::interfaces::Readable;
        Self::for_cpu(MIDR.get(), REVIDR.get(), ipi)
    }
}

impl A15Workaround {
    /// Off < dummy invalidate < dummy invalidate and IPI.
    const fn strength(&self) -> u8 {
        match self {
            A15Workaround::Off => 0,
            A15Workaround::DummyInvalidate => 1,
            A15Workaround::DummyInvalidateAndIpi(_) => 2,
        }
    }
}

impl ErrataConfig {
    /// The configuration a system with CPUs needing `self` and `other` needs: every
    /// workaround either needs, and the stronger 798181 workaround (`Off` <
    /// `DummyInvalidate` < `DummyInvalidateAndIpi`; with both the IPI form, `self`'s hook).
    #[must_use]
    pub const fn merge(self, other: ErrataConfig) -> ErrataConfig {
        ErrataConfig {
            a9_720789: self.a9_720789 || other.a9_720789,
            a9_754322: self.a9_754322 || other.a9_754322,
            a15_798181: if other.a15_798181.strength() > self.a15_798181.strength() {
                other.a15_798181
            } else {
                self.a15_798181
            },
        }
    }
}

// `SystemErrata` flag bits. The IPI bit is only ever set with the dummy bit, so the
// union of flag sets is the merge of configurations.
const F_720789: u8 = 0b1;
const F_754322: u8 = 1 << 1;
const F_798181_DUMMY: u8 = 1 << 2;
const F_798181_IPI: u8 = 1 << 3;
/// A recorded CPU needs the 798181 IPI and the system has no hook.
const F_798181_NO_HOOK: u8 = 1 << 4;

/// The errata of every CPU of a system, merged as they come up: one per system, in a
/// `static` the kernel owns (the crate keeps no global state).
///
/// ```rust,ignore
/// static ERRATA: SystemErrata = SystemErrata::new(Some(send_798181_ipi));
/// // on each CPU, early in its bring-up, before it runs any shared address space:
/// ERRATA.record_this_cpu()?;
/// ```
///
/// Backends created with it ([`super::Armv7Tlb::with_system_errata`], or detection)
/// read [`SystemErrata::current`] at every operation, so a backend created before a later
/// CPU came up applies that CPU's errata from then on. Recording only adds (an atomic
/// `fetch_or`): nothing is ever un-recorded.
#[derive(Debug)]
pub struct SystemErrata {
    flags: AtomicU8,
    hook: Option<IpiHook>,
}

impl SystemErrata {
    /// A system with no CPU recorded yet, whose full 798181 workaround (if any CPU needs
    /// it) calls `hook`.
    #[must_use]
    pub const fn new(hook: Option<IpiHook>) -> Self {
        Self {
            flags: AtomicU8::new(0),
            hook,
        }
    }

    /// Adds the configuration one CPU needs.
    ///
    /// # Errors
    /// [`ErrataError::IpiHookRequired`] if `config` asks for the full 798181 workaround and
    /// the system has no hook; the rest of `config` (and the dummy invalidate) is recorded.
    pub fn record(&self, config: ErrataConfig) -> Result<(), ErrataError> {
        let mut flags = 0;
        if config.a9_720789 {
            flags |= F_720789;
        }
        if config.a9_754322 {
            flags |= F_754322;
        }
        let mut result = Ok(());
        match config.a15_798181 {
            A15Workaround::Off => {}
            A15Workaround::DummyInvalidate => flags |= F_798181_DUMMY,
            A15Workaround::DummyInvalidateAndIpi(_) => {
                flags |= F_798181_DUMMY;
                if self.hook.is_some() {
                    flags |= F_798181_IPI;
                } else {
                    flags |= F_798181_NO_HOOK;
                    result = Err(ErrataError::IpiHookRequired);
                }
            }
        }
        self.add_flags(flags);
        result
    }

    fn add_flags(&self, flags: u8) {
        #[cfg(test)]
        if tests::mutant_last_writer_wins() {
            self.flags.store(flags, Ordering::Release);
            return;
        }
        self.flags.fetch_or(flags, Ordering::AcqRel);
    }

    /// Records a CPU with this `MIDR` and `REVIDR` ([`ErrataConfig::for_cpu`] with the
    /// system's hook) and returns what that CPU alone needs.
    ///
    /// # Errors
    /// As [`SystemErrata::record`].
    pub fn record_cpu(&self, midr: u32, revidr: u32) -> Result<ErrataConfig, ErrataError> {
        // With a stand-in hook `for_cpu` cannot fail; `record` reports a missing hook
        // (after recording everything else).
        let config = ErrataConfig::for_cpu(midr, revidr, Some(self.hook.unwrap_or(ignore_ipi)))?;
        self.record(config)?;
        Ok(config)
    }

    /// [`SystemErrata::record_cpu`] with this CPU's `MIDR` and `REVIDR`.
    ///
    /// # Errors
    /// As [`SystemErrata::record`].
    #[cfg(target_arch = "arm")]
    pub fn record_this_cpu(&self) -> Result<ErrataConfig, ErrataError> {
        use crate::arch::cp15::{MIDR, REVIDR};
        use tock_registers::interfaces::Readable;
        self.record_cpu(MIDR.get(), REVIDR.get())
    }

    /// [`SystemErrata::current`], or an error if a recorded CPU needs the full 798181
    /// workaround and the system has no hook (so an inner-shareable backend would apply
    /// only its dummy-invalidate half). Detection of an inner-shareable backend checks this.
    ///
    /// # Errors
    /// [`ErrataError::IpiHookRequired`].
    pub fn complete(&self) -> Result<ErrataConfig, ErrataError> {
        if self.flags.load(Ordering::Acquire) & F_798181_NO_HOOK != 0 {
            Err(ErrataError::IpiHookRequired)
        } else {
            Ok(self.current())
        }
    }

    /// What the system needs now: the merge of every CPU recorded so far.
    #[must_use]
    pub fn current(&self) -> ErrataConfig {
        // Relaxed is enough for a backend's reads: a CPU records itself before it runs
        // any shared address space, and the kernel's bring-up handshake (which must
        // order that) orders the record before any batch that could concern the CPU.
        let flags = self.flags.load(Ordering::Relaxed);
        ErrataConfig {
            a9_720789: flags & F_720789 != 0,
            a9_754322: flags & F_754322 != 0,
            a15_798181: match (flags & F_798181_IPI != 0, self.hook) {
                (true, Some(hook)) => A15Workaround::DummyInvalidateAndIpi(hook),
                _ if flags & F_798181_DUMMY != 0 => A15Workaround::DummyInvalidate,
                _ => A15Workaround::Off,
            },
        }
    }
}

/// Stands in for a missing hook while recording what can be recorded (never called: the
/// IPI flag is not set without the system's hook).
fn ignore_ipi(_: IpiTarget) {}

impl Default for ErrataConfig {
    fn default() -> Self {
        Self::NONE
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    std::thread_local! {
        static LAST_WRITER_WINS: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
    }

    /// Mutant for the teeth of the merge tests: recording *replaces* the system's errata
    /// instead of adding to them (on this test thread only).
    pub(crate) fn mutant_last_writer_wins() -> bool {
        LAST_WRITER_WINS.with(|m| m.get())
    }

    /// Runs `f` with the last-writer-wins mutant switched on.
    pub(crate) fn with_last_writer_wins<R>(f: impl FnOnce() -> R) -> R {
        LAST_WRITER_WINS.with(|m| m.set(true));
        let r = f();
        LAST_WRITER_WINS.with(|m| m.set(false));
        r
    }

    /// A `MIDR` value for `implementer`'s `part` at `rNpM`.
    fn midr(implementer: u32, part: u32, r: u32, p: u32) -> u32 {
        (implementer << 24) | (r << 20) | (0xF << 16) | (part << 4) | p
    }
    fn a15(r: u32, p: u32) -> u32 {
        midr(0x41, 0xC0F, r, p)
    }
    const BIT4: u32 = 1 << 4;
    const BIT9: u32 = 1 << 9;

    #[test]
    fn a15_798181_revision_table() {
        use A15Erratum798181::*;
        // (r, p, revidr, expected)
        let table = [
            (0, 0, 0, Full),
            (2, 1, BIT4 | BIT9, Full), // no ECO exists before r2p2: REVIDR ignored
            (2, 2, 0, Full),
            (2, 2, BIT4, Partial),
            (2, 3, BIT4 | BIT9, Partial), // bit 9 undefined on r2p2/r2p3
            (2, 3, BIT9, Full),
            (2, 4, 0, Full),
            (2, 4, BIT4, Partial),
            (2, 4, BIT4 | BIT9, Partial),
            (2, 4, BIT9, NotAffected), // the updated fix alone, from r2p4
            (2, 3, BIT9, Full),
            (3, 0, BIT9, NotAffected),
            (3, 2, BIT4 | BIT9, Partial),
            (3, 2, BIT4, Partial),
            (3, 2, 0, Full),
            (3, 3, 0, Partial),
            (3, 3, BIT9, NotAffected),
            (4, 0, 0, NotAffected),
        ];
        for (r, p, revidr, want) in table {
            assert_eq!(
                a15_798181(a15(r, p), revidr),
                want,
                "r{r}p{p} REVIDR {revidr:#x}"
            );
        }
    }

    #[test]
    fn a15_798181_other_cpus() {
        use A15Erratum798181::*;
        assert_eq!(a15_798181(midr(0x41, 0xC07, 0, 5), 0), NotAffected); // Cortex-A7
        assert_eq!(a15_798181(midr(0x41, 0xC09, 1, 0), 0), NotAffected); // Cortex-A9
        assert_eq!(a15_798181(midr(0x42, 0x00F, 0, 0), 0), Full); // Brahma-B15 r0p0
        assert_eq!(a15_798181(midr(0x42, 0x00F, 0, 2), 0), Full);
        assert_eq!(a15_798181(midr(0x42, 0x00F, 0, 3), 0), NotAffected);
        // Same part number from another implementer.
        assert_eq!(a15_798181(midr(0x51, 0xC0F, 0, 0), 0), NotAffected);
    }

    #[test]
    fn a9_754322_r2_and_r3_only() {
        assert!(!a9_754322_affected(midr(0x41, 0xC09, 1, 4)));
        assert!(a9_754322_affected(midr(0x41, 0xC09, 2, 0)));
        assert!(a9_754322_affected(midr(0x41, 0xC09, 3, 0)));
        assert!(!a9_754322_affected(midr(0x41, 0xC09, 4, 1)));
        assert!(!a9_754322_affected(midr(0x41, 0xC0F, 2, 0)));
        let c = ErrataConfig::for_cpu(midr(0x41, 0xC09, 2, 1), 0, None).unwrap();
        assert!(c.a9_754322 && !c.a9_720789);
    }

    #[test]
    fn a9_720789_before_r2p0_only() {
        assert!(a9_720789_affected(midr(0x41, 0xC09, 0, 0)));
        assert!(a9_720789_affected(midr(0x41, 0xC09, 1, 4)));
        assert!(!a9_720789_affected(midr(0x41, 0xC09, 2, 0)));
        assert!(!a9_720789_affected(midr(0x41, 0xC0F, 0, 0)));
        assert!(!a9_720789_affected(midr(0x42, 0xC09, 0, 0)));
    }

    fn hook(_: IpiTarget) {}

    static CALLED: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);
    fn hook_one(_: IpiTarget) {
        CALLED.store(1, core::sync::atomic::Ordering::SeqCst);
    }
    fn hook_two(_: IpiTarget) {
        CALLED.store(2, core::sync::atomic::Ordering::SeqCst);
    }

    #[test]
    fn workarounds_compare_by_kind_and_merge_keeps_the_first_hook() {
        use A15Workaround::*;
        assert_ne!(Off, DummyInvalidate);
        assert_ne!(DummyInvalidate, DummyInvalidateAndIpi(hook));
        assert_eq!(
            DummyInvalidateAndIpi(hook_one),
            DummyInvalidateAndIpi(hook_two)
        );
        // Equal strength: `self`'s hook is the one the merge keeps (as documented).
        let with = |h: IpiHook| ErrataConfig {
            a15_798181: DummyInvalidateAndIpi(h),
            ..ErrataConfig::NONE
        };
        let merged = with(hook_one).merge(with(hook_two));
        let DummyInvalidateAndIpi(h) = merged.a15_798181 else {
            panic!("{merged:?}");
        };
        h(IpiTarget::AllCpus);
        assert_eq!(CALLED.load(core::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn the_errata_error_says_what_is_missing() {
        let text = std::format!("{}", ErrataError::IpiHookRequired);
        assert!(text.contains("IPI hook"), "{text}");
    }

    #[test]
    fn a_system_keeps_every_flag_it_records() {
        // A Cortex-A9 r2p1 (754322) and an r1p0 (720789), recorded one after the other.
        let sys = SystemErrata::new(None);
        sys.record_cpu(midr(0x41, 0xC09, 2, 1), 0).unwrap();
        assert!(sys.current().a9_754322, "{:?}", sys.current());
        sys.record_cpu(midr(0x41, 0xC09, 1, 0), 0).unwrap();
        let c = sys.current();
        assert!(c.a9_754322 && c.a9_720789, "{c:?}");
    }

    #[test]
    fn config_for_cpu() {
        // Cortex-A15 r2p1 (no ECO fix exists): full workaround, needs the hook.
        assert_eq!(
            ErrataConfig::for_cpu(0x412F_C0F1, 0, None),
            Err(ErrataError::IpiHookRequired)
        );
        let c = ErrataConfig::for_cpu(0x412F_C0F1, 0, Some(hook)).unwrap();
        assert_eq!(c.a15_798181, A15Workaround::DummyInvalidateAndIpi(hook));
        assert!(!c.a9_720789);
        // Partial needs no hook.
        let c = ErrataConfig::for_cpu(a15(2, 2), BIT4, None).unwrap();
        assert_eq!(c.a15_798181, A15Workaround::DummyInvalidate);
        // Cortex-A7: nothing.
        assert_eq!(
            ErrataConfig::for_cpu(0x410F_C075, 0, None),
            Ok(ErrataConfig::NONE)
        );
        // Cortex-A9 r1p0.
        let c = ErrataConfig::for_cpu(midr(0x41, 0xC09, 1, 0), 0, None).unwrap();
        assert!(c.a9_720789);
        assert_eq!(c.a15_798181, A15Workaround::Off);
    }
}

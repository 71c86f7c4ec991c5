//! The ARMv7 TLB backends: [`Armv7Tlb`] in [`Shareability::Local`] or [`Shareability::InnerShareable`]
//! form, with the system's errata workarounds and exact counters.
//!
//! # Choosing one
//!
//! `Cp15Tlb::detect(&ERRATA)` (ARM; [`Armv7Tlb::for_cpu`] with any sink) decides from this
//! CPU's registers ([`super::select`]: broadcast prerequisites checked, `ACTLR` included),
//! records this CPU into the kernel's [`SystemErrata`] and applies the merged errata of every
//! recorded CPU. It returns the inner-shareable backend only when broadcast is effective,
//! the local one on a uniprocessor, and otherwise an error saying why
//! ([`DetectError::Broadcast`]) for the kernel to choose another way (an IPI shootdown, as
//! in the crate's `tlb::ipi`). `Cp15Tlb::forced` takes the kernel's word for the
//! shareability; [`Armv7Tlb::new`] is the bare backend (no errata at all) for tests and
//! for kernels that configure everything themselves.
//!
//! The backend decides *what* to issue (which instruction, which operand, which barrier,
//! errata substitutions, once-per-batch barriers); an [`InsnSink`] issues it. On ARM the sink
//! is `Cp15` (ARM only), which executes the instructions through [`crate::arch`]; host tests use
//! `Recorder` (feature `std`) and check the exact sequence. So everything but the
//! instruction issue itself is host-tested, and the boot test `tlb_ops` checks that the
//! instructions have their effect on a real (emulated) TLB.
//!
//! # A batch
//!
//! | call | `Local` | `InnerShareable` |
//! | --- | --- | --- |
//! | `prepare` | `dsb nshst` | `dsb ishst` |
//! | `invalidate_va(va, asid)` | `TLBIMVA va\|asid` | `TLBIMVAIS va\|asid` (720789: `TLBIMVAAIS va`) |
//! | `invalidate_va_all_asids(va)` | `TLBIMVAA va` | `TLBIMVAAIS va` |
//! | `invalidate_asid(asid)` | `TLBIASID asid` | `TLBIASIDIS asid` (720789: `TLBIALLIS`) |
//! | `invalidate_all` | `TLBIALL` | `TLBIALLIS` |
//! | `invalidate_branch_predictor` | `BPIALL` | `BPIALLIS` |
//! | `complete` | `dsb nsh`, `isb` | `dsb ish`, \[798181: `TLBIMVAIS 0`, `dsb ish`, IPI hook\], `isb` |
//!
//! Barriers are issued once per `prepare`/`complete`, never per operation, and each call
//! issues exactly what the table says, whether or not the batch is empty: the caller
//! decides what a batch is. The 798181 steps run only in a batch that issued at least one
//! TLB invalidate (not for a branch-predictor-only batch).
//!
//! The `dsb` of `prepare` makes table writes visible to the walkers. Where table walks are
//! not coherent with the data cache (`ID_MMFR3.CohWalk` = 0), the address space itself
//! cleans every descriptor it writes to the point of coherency before that
//! (`arch::mmu::clean_dcache_for_walker`, from `table::space`); the backend adds no
//! cache maintenance of its own.
//!
//! # Counting
//!
//! [`TlbCounters`] are exact: each invalidate request adds one to its own field (it is one
//! instruction even when an erratum substitutes another), each `prepare` one to `prepares`,
//! each `complete` one to `completions`, each 798181 dummy invalidate one to `errata` (its
//! extra `dsb ish` is part of it). IPI hook calls are counted by [`Armv7Tlb::errata_ipis`].

use super::errata::{A15Workaround, ErrataConfig, ErrataError, IpiTarget, SystemErrata};
use super::select::{CpuFeatures, CpuRegisters, DetectError, Shareability};
use super::{Asid, TlbBackend, TlbCounters};
use crate::addr::VirtAddr;
#[cfg(target_arch = "arm")]
pub use crate::arch::insn::Cp15;
#[cfg(any(test, feature = "std"))]
pub use crate::arch::insn::Recorder;
pub use crate::arch::insn::{Insn, InsnSink, SysReg, SysRegs};

/// The `VA[31:12] | ASID` operand of the by-VA forms.
const fn va_asid_operand(va: VirtAddr, asid: Asid) -> u32 {
    (va.as_u32() & !0xfff) | asid.0 as u32
}

/// The `VA[31:12]` operand of the all-ASID by-VA forms.
const fn va_operand(va: VirtAddr) -> u32 {
    va.as_u32() & !0xfff
}

/// What the current batch has touched (for the 798181 workaround).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Touched {
    Nothing,
    Asid(Asid),
    Everything,
}

impl Touched {
    fn add_asid(self, asid: Asid) -> Self {
        match self {
            Touched::Nothing => Touched::Asid(asid),
            Touched::Asid(a) if a == asid => self,
            _ => Touched::Everything,
        }
    }
}

/// Where a backend's errata configuration comes from.
#[derive(Clone, Copy, Debug)]
enum Errata {
    /// This configuration, whatever CPUs come up.
    Fixed(ErrataConfig),
    /// The system's, read at each operation.
    System(&'static SystemErrata),
}

/// How detection treats `ACTLR`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ActlrPolicy {
    /// Check it against the part's bits ([`super::select::ActlrBits`]).
    Check,
    /// Take the kernel's word that broadcast is switched on
    /// ([`CpuFeatures::assume_actlr_effective`]: QEMU, whose `ACTLR` is RAZ/WI, or a part
    /// the crate does not know).
    AssumeEffective,
}

/// The ARMv7 TLB backend. `S` issues the instructions: `Cp15` on ARM (see `Cp15Tlb`),
/// `Recorder` (feature `std`) in host tests.
#[derive(Debug)]
pub struct Armv7Tlb<S: InsnSink> {
    sink: S,
    shareability: Shareability,
    errata: Errata,
    counters: TlbCounters,
    errata_ipis: u64,
    touched: Touched,
}

/// The backend that executes on this CPU.
#[cfg(target_arch = "arm")]
pub type Cp15Tlb = Armv7Tlb<Cp15>;

#[cfg(target_arch = "arm")]
impl Armv7Tlb<Cp15> {
    /// The backend this CPU calls for, with the system's errata: [`Armv7Tlb::for_cpu`]
    /// with this CPU's registers and `ACTLR` checked.
    ///
    /// # Errors
    /// As [`Armv7Tlb::for_cpu`].
    pub fn detect(errata: &'static SystemErrata) -> Result<Self, DetectError> {
        Self::detect_with(ActlrPolicy::Check, errata)
    }

    /// [`Cp15Tlb::detect`] with an explicit `ACTLR` policy.
    ///
    /// # Errors
    /// As [`Armv7Tlb::for_cpu`].
    pub fn detect_with(
        actlr: ActlrPolicy,
        errata: &'static SystemErrata,
    ) -> Result<Self, DetectError> {
        Self::for_cpu(Cp15, &CpuRegisters::read(), actlr, errata)
    }

    /// A backend of the shareability the kernel chose (it knows better: a single-CPU
    /// system, or broadcast it has verified itself), with the system's errata; this CPU is
    /// recorded into `errata` first.
    ///
    /// # Errors
    /// [`ErrataError::IpiHookRequired`] for an inner-shareable backend when a recorded CPU
    /// needs the full 798181 workaround and the system has no IPI hook
    /// ([`SystemErrata::complete`]).
    pub fn forced(
        shareability: Shareability,
        errata: &'static SystemErrata,
    ) -> Result<Self, ErrataError> {
        use crate::arch::cp15::{MIDR, REVIDR};
        use tock_registers::interfaces::Readable;
        Self::forced_for_cpu(Cp15, shareability, MIDR.get(), REVIDR.get(), errata)
    }
}

impl<S: InsnSink> Armv7Tlb<S> {
    /// A bare backend of `shareability` issuing through `sink`, **without errata
    /// workarounds** (host tests, and kernels that add [`Armv7Tlb::with_errata`] or
    /// [`Armv7Tlb::with_system_errata`] themselves). Kernels normally detect instead.
    #[must_use]
    pub const fn new(sink: S, shareability: Shareability) -> Self {
        Self {
            sink,
            shareability,
            errata: Errata::Fixed(ErrataConfig::NONE),
            counters: TlbCounters {
                va: 0,
                va_all_asids: 0,
                asid: 0,
                all: 0,
                branch_predictor: 0,
                prepares: 0,
                completions: 0,
                errata: 0,
            },
            errata_ipis: 0,
            touched: Touched::Nothing,
        }
    }

    /// Detection from register values, with any sink (the ARM `Cp15Tlb::detect` is this
    /// with `Cp15` and the live registers): records the CPU into `errata`, decides the
    /// shareability ([`CpuFeatures::broadcast`], `ACTLR` per `actlr`) and returns a backend
    /// that applies the system's merged errata.
    ///
    /// # Errors
    /// - [`DetectError::Broadcast`]: an SMP CPU without effective broadcast (the reason
    ///   says which prerequisite failed); never a silent local backend.
    /// - [`DetectError::Errata`]: inner shareable, but a recorded CPU (this one or an
    ///   earlier one) needs the full 798181 workaround and `errata` has no IPI hook
    ///   ([`SystemErrata::complete`]). (A uniprocessor gets its local backend: the errata
    ///   concern broadcast only.)
    pub fn for_cpu(
        sink: S,
        cpu: &CpuRegisters,
        actlr: ActlrPolicy,
        errata: &'static SystemErrata,
    ) -> Result<Self, DetectError> {
        // A missing hook is reported by `complete` below, for whichever CPU needed it.
        let _ = errata.record_cpu(cpu.midr, cpu.revidr);
        let mut features = CpuFeatures::from_cpu(cpu);
        if actlr == ActlrPolicy::AssumeEffective {
            features = features.assume_actlr_effective();
        }
        let shareability = features.broadcast()?;
        if shareability == Shareability::InnerShareable {
            errata.complete()?;
        }
        Ok(Self::new(sink, shareability).with_system_errata(errata))
    }

    /// `Cp15Tlb::forced` with any sink and register values.
    ///
    /// # Errors
    /// As `Cp15Tlb::forced`.
    pub fn forced_for_cpu(
        sink: S,
        shareability: Shareability,
        midr: u32,
        revidr: u32,
        errata: &'static SystemErrata,
    ) -> Result<Self, ErrataError> {
        let _ = errata.record_cpu(midr, revidr);
        if shareability == Shareability::InnerShareable {
            errata.complete()?;
        }
        Ok(Self::new(sink, shareability).with_system_errata(errata))
    }

    /// The same backend with this fixed errata configuration (it only changes what the
    /// [`Shareability::InnerShareable`] form issues), whatever other CPUs need.
    #[must_use]
    pub fn with_errata(mut self, errata: ErrataConfig) -> Self {
        self.errata = Errata::Fixed(errata);
        self
    }

    /// The same backend applying `errata`'s merged configuration, read at each operation.
    #[must_use]
    pub fn with_system_errata(mut self, errata: &'static SystemErrata) -> Self {
        self.errata = Errata::System(errata);
        self
    }

    /// The same backend without any errata workaround: the explicit opt-out.
    #[must_use]
    pub fn without_errata(self) -> Self {
        self.with_errata(ErrataConfig::NONE)
    }

    /// The same backend in another shareability (the kernel's override of the detected one).
    #[must_use]
    pub fn with_shareability(mut self, shareability: Shareability) -> Self {
        self.shareability = shareability;
        self
    }

    /// The shareability the backend issues in.
    #[must_use]
    pub const fn shareability(&self) -> Shareability {
        self.shareability
    }

    /// The errata workarounds in effect now (the system's merge so far, or the fixed
    /// configuration).
    #[must_use]
    pub fn errata(&self) -> ErrataConfig {
        match self.errata {
            Errata::Fixed(config) => config,
            Errata::System(system) => system.current(),
        }
    }

    /// How many times the 798181 IPI hook has been called.
    #[must_use]
    pub const fn errata_ipis(&self) -> u64 {
        self.errata_ipis
    }

    /// The instruction sink.
    #[must_use]
    pub const fn sink(&self) -> &S {
        &self.sink
    }

    /// The instruction sink, mutably (e.g. to clear a `Recorder`).
    pub fn sink_mut(&mut self) -> &mut S {
        &mut self.sink
    }
}

impl<S: InsnSink> TlbBackend for Armv7Tlb<S> {
    fn prepare(&mut self) {
        self.counters.prepares += 1;
        self.sink.issue(match self.shareability {
            Shareability::Local => Insn::DsbNshst,
            Shareability::InnerShareable => Insn::DsbIshst,
        });
    }

    fn invalidate_va(&mut self, va: VirtAddr, asid: Asid) {
        self.counters.va += 1;
        self.touched = self.touched.add_asid(asid);
        let insn = match self.shareability {
            Shareability::Local => Insn::Tlbimva(va_asid_operand(va, asid)),
            Shareability::InnerShareable if self.errata().a9_720789 => {
                Insn::Tlbimvaais(va_operand(va))
            }
            Shareability::InnerShareable => Insn::Tlbimvais(va_asid_operand(va, asid)),
        };
        self.sink.issue(insn);
    }

    fn invalidate_va_all_asids(&mut self, va: VirtAddr) {
        self.counters.va_all_asids += 1;
        self.touched = Touched::Everything;
        self.sink.issue(match self.shareability {
            Shareability::Local => Insn::Tlbimvaa(va_operand(va)),
            Shareability::InnerShareable => Insn::Tlbimvaais(va_operand(va)),
        });
    }

    fn invalidate_asid(&mut self, asid: Asid) {
        self.counters.asid += 1;
        self.touched = self.touched.add_asid(asid);
        let insn = match self.shareability {
            Shareability::Local => Insn::Tlbiasid(asid.0),
            Shareability::InnerShareable if self.errata().a9_720789 => Insn::Tlbiallis,
            Shareability::InnerShareable => Insn::Tlbiasidis(asid.0),
        };
        self.sink.issue(insn);
    }

    fn invalidate_all(&mut self) {
        self.counters.all += 1;
        self.touched = Touched::Everything;
        self.sink.issue(match self.shareability {
            Shareability::Local => Insn::Tlbiall,
            Shareability::InnerShareable => Insn::Tlbiallis,
        });
    }

    fn invalidate_branch_predictor(&mut self) {
        self.counters.branch_predictor += 1;
        self.sink.issue(match self.shareability {
            Shareability::Local => Insn::Bpiall,
            Shareability::InnerShareable => Insn::Bpiallis,
        });
    }

    fn complete(&mut self) {
        self.counters.completions += 1;
        let touched = core::mem::replace(&mut self.touched, Touched::Nothing);
        match self.shareability {
            Shareability::Local => self.sink.issue(Insn::DsbNsh),
            Shareability::InnerShareable => {
                self.sink.issue(Insn::DsbIsh);
                // 798181 concerns broadcast maintenance only: this arm.
                if touched != Touched::Nothing {
                    self.a15_798181(touched);
                }
            }
        }
        self.sink.issue(Insn::Isb);
    }

    fn counters(&self) -> TlbCounters {
        self.counters
    }
}

impl<S: InsnSink> Armv7Tlb<S> {
    /// The 798181 steps after a batch's completion `dsb ish`.
    fn a15_798181(&mut self, touched: Touched) {
        let hook = match self.errata().a15_798181 {
            A15Workaround::Off => return,
            A15Workaround::DummyInvalidate => None,
            A15Workaround::DummyInvalidateAndIpi(hook) => Some(hook),
        };
        self.counters.errata += 1;
        self.sink.issue(Insn::Tlbimvais(0));
        self.sink.issue(Insn::DsbIsh);
        if let Some(hook) = hook {
            self.errata_ipis += 1;
            hook(match touched {
                Touched::Asid(asid) => IpiTarget::Asid(asid),
                _ => IpiTarget::AllCpus,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::vec;
    use std::vec::Vec;

    use super::*;
    use crate::tlb::errata::A15Workaround;
    use Insn::*;

    fn backend(shareability: Shareability) -> Armv7Tlb<Recorder> {
        Armv7Tlb::new(Recorder::default(), shareability)
    }

    fn va(a: u32) -> VirtAddr {
        VirtAddr::new(a)
    }

    /// One batch with every operation; returns what was issued.
    fn every_op(b: &mut Armv7Tlb<Recorder>) -> Vec<Insn> {
        b.sink_mut().log.clear();
        b.prepare();
        b.invalidate_va(va(0x1234_5678), Asid(7));
        b.invalidate_va_all_asids(va(0xC000_1FFF));
        b.invalidate_asid(Asid(9));
        b.invalidate_all();
        b.invalidate_branch_predictor();
        b.complete();
        b.sink().log.clone()
    }

    #[test]
    fn local_batch_exact_sequence() {
        let mut b = backend(Shareability::Local);
        assert_eq!(
            every_op(&mut b),
            vec![
                DsbNshst,
                Tlbimva(0x1234_5007),
                Tlbimvaa(0xC000_1000),
                Tlbiasid(9),
                Tlbiall,
                Bpiall,
                DsbNsh,
                Isb
            ]
        );
    }

    #[test]
    fn inner_shareable_batch_exact_sequence() {
        let mut b = backend(Shareability::InnerShareable);
        assert_eq!(
            every_op(&mut b),
            vec![
                DsbIshst,
                Tlbimvais(0x1234_5007),
                Tlbimvaais(0xC000_1000),
                Tlbiasidis(9),
                Tlbiallis,
                Bpiallis,
                DsbIsh,
                Isb
            ]
        );
    }

    #[test]
    fn counters_exact_and_barriers_once_per_batch() {
        for shareability in [Shareability::Local, Shareability::InnerShareable] {
            let mut b = backend(shareability);
            b.prepare();
            for i in 0..100u32 {
                b.invalidate_va(va(i << 12), Asid(1));
            }
            for i in 0..3u32 {
                b.invalidate_va_all_asids(va(i << 12));
            }
            b.invalidate_asid(Asid(2));
            b.invalidate_asid(Asid(3));
            b.invalidate_all();
            b.invalidate_branch_predictor();
            b.complete();
            assert_eq!(
                b.counters(),
                TlbCounters {
                    va: 100,
                    va_all_asids: 3,
                    asid: 2,
                    all: 1,
                    branch_predictor: 1,
                    prepares: 1,
                    completions: 1,
                    errata: 0,
                }
            );
            assert_eq!(b.counters().invalidates(), 106);
            // Exactly three barriers in the whole batch: one before, `dsb` + `isb` after.
            let barriers = b
                .sink()
                .log
                .iter()
                .filter(|i| matches!(i, DsbNshst | DsbNsh | DsbIshst | DsbIsh | Isb))
                .count();
            assert_eq!(barriers, 3, "{shareability:?}");
            assert_eq!(b.sink().log.len(), 106 + 1 + 3);
        }
    }

    #[test]
    fn a9_720789_never_broadcasts_an_asid() {
        let errata = ErrataConfig {
            a9_720789: true,
            a9_754322: false,
            a15_798181: A15Workaround::Off,
        };
        let mut b = backend(Shareability::InnerShareable).with_errata(errata);
        assert_eq!(
            every_op(&mut b),
            vec![
                DsbIshst,
                Tlbimvaais(0x1234_5000),
                Tlbimvaais(0xC000_1000),
                Tlbiallis,
                Tlbiallis,
                Bpiallis,
                DsbIsh,
                Isb
            ]
        );
        // Counted as what was asked for.
        let c = b.counters();
        assert_eq!((c.va, c.asid, c.all, c.errata), (1, 1, 1, 0));
        // The local form is not affected.
        let mut b = backend(Shareability::Local).with_errata(errata);
        assert_eq!(every_op(&mut b)[1], Tlbimva(0x1234_5007));
    }

    #[test]
    fn a15_798181_partial_once_per_batch_after_completion_dsb() {
        let errata = ErrataConfig {
            a9_720789: false,
            a9_754322: false,
            a15_798181: A15Workaround::DummyInvalidate,
        };
        let mut b = backend(Shareability::InnerShareable).with_errata(errata);
        b.prepare();
        b.invalidate_va(va(0x4000), Asid(3));
        b.invalidate_va(va(0x5000), Asid(3));
        b.complete();
        assert_eq!(
            b.sink().log,
            vec![
                DsbIshst,
                Tlbimvais(0x4003),
                Tlbimvais(0x5003),
                DsbIsh,
                Tlbimvais(0),
                DsbIsh,
                Isb
            ]
        );
        assert_eq!(b.counters().errata, 1);
        assert_eq!(b.counters().completions, 1);
        assert_eq!(b.errata_ipis(), 0);
        // A branch-predictor-only batch needs no workaround; neither does an empty one.
        b.sink_mut().log.clear();
        b.prepare();
        b.invalidate_branch_predictor();
        b.complete();
        b.prepare();
        b.complete();
        assert_eq!(
            b.sink().log,
            vec![DsbIshst, Bpiallis, DsbIsh, Isb, DsbIshst, DsbIsh, Isb]
        );
        assert_eq!(b.counters().errata, 1);
        // Not for the local form.
        let mut b = backend(Shareability::Local).with_errata(errata);
        b.prepare();
        b.invalidate_all();
        b.complete();
        assert_eq!(b.sink().log, vec![DsbNshst, Tlbiall, DsbNsh, Isb]);
        assert_eq!(b.counters().errata, 0);
    }

    /// Instructions and IPI hook calls of `a15_798181_full_calls_hook_with_target`, in order.
    static EVENTS: Mutex<Vec<std::string::String>> = Mutex::new(Vec::new());

    struct EventSink;
    impl InsnSink for EventSink {
        fn issue(&mut self, insn: Insn) {
            EVENTS.lock().unwrap().push(insn.mnemonic().into());
        }
    }

    fn record_ipi(t: IpiTarget) {
        EVENTS.lock().unwrap().push(std::format!("ipi {t:?}"));
    }

    fn take_events() -> Vec<std::string::String> {
        core::mem::take(&mut *EVENTS.lock().unwrap())
    }

    #[test]
    fn a15_798181_full_calls_hook_with_target() {
        let errata = ErrataConfig {
            a9_720789: false,
            a9_754322: false,
            a15_798181: A15Workaround::DummyInvalidateAndIpi(record_ipi),
        };
        let mut b = Armv7Tlb::new(EventSink, Shareability::InnerShareable).with_errata(errata);
        take_events();
        // One ASID only: the hook runs after the dummy invalidate and its dsb, before isb.
        b.prepare();
        b.invalidate_va(va(0x4000), Asid(3));
        b.invalidate_asid(Asid(3));
        b.complete();
        assert_eq!(
            take_events(),
            [
                "dsb ishst",
                "tlbimvais",
                "tlbiasidis",
                "dsb ish",
                "tlbimvais",
                "dsb ish",
                "ipi Asid(Asid(3))",
                "isb"
            ]
        );
        // Two ASIDs; a VA for all ASIDs; everything: all CPUs.
        b.prepare();
        b.invalidate_va(va(0x4000), Asid(3));
        b.invalidate_va(va(0x4000), Asid(4));
        b.complete();
        b.prepare();
        b.invalidate_va_all_asids(va(0x4000));
        b.complete();
        b.prepare();
        b.invalidate_all();
        b.complete();
        let ipis: Vec<_> = take_events()
            .into_iter()
            .filter(|e| e.starts_with("ipi"))
            .collect();
        assert_eq!(ipis, ["ipi AllCpus"; 3]);
        assert_eq!(b.errata_ipis(), 4);
        assert_eq!(b.counters().errata, 4);
        assert_eq!(b.counters().completions, 4);
        // The batch state resets at completion: a new single-ASID batch targets that ASID.
        b.prepare();
        b.invalidate_asid(Asid(5));
        b.complete();
        assert!(take_events().contains(&"ipi Asid(Asid(5))".into()));
    }

    #[test]
    fn scope_override() {
        let b = backend(Shareability::InnerShareable).with_shareability(Shareability::Local);
        assert_eq!(b.shareability(), Shareability::Local);
    }

    #[test]
    fn works_through_mut_reference() {
        fn drive<B: TlbBackend>(mut b: B) {
            b.prepare();
            b.invalidate_va(VirtAddr::new(0x1000), Asid(1));
            b.complete();
        }
        let mut b = backend(Shareability::Local);
        drive(&mut b);
        assert_eq!(b.counters().va, 1);
        assert_eq!(b.sink().log, vec![DsbNshst, Tlbimva(0x1001), DsbNsh, Isb]);
    }
}

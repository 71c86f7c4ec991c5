//! The ARMv7 TLB backends: [`Armv7Tlb`] in [`Shareability::Local`] or [`Shareability::InnerShareable`]
//! form, with opt-in errata workarounds and exact counters.
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

use super::errata::{A15Workaround, ErrataConfig, IpiTarget};
use super::select::Shareability;
use super::{Asid, TlbBackend, TlbCounters};
use crate::addr::VirtAddr;

/// One instruction a backend issues.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Insn {
    /// `TLBIALL` (operand ignored).
    Tlbiall,
    /// `TLBIMVA` with operand `VA[31:12] | ASID`.
    Tlbimva(u32),
    /// `TLBIASID` with this ASID.
    Tlbiasid(u8),
    /// `TLBIMVAA` with operand `VA[31:12]`.
    Tlbimvaa(u32),
    /// `BPIALL`.
    Bpiall,
    /// `TLBIALLIS`.
    Tlbiallis,
    /// `TLBIMVAIS` with operand `VA[31:12] | ASID`.
    Tlbimvais(u32),
    /// `TLBIASIDIS` with this ASID.
    Tlbiasidis(u8),
    /// `TLBIMVAAIS` with operand `VA[31:12]`.
    Tlbimvaais(u32),
    /// `BPIALLIS`.
    Bpiallis,
    /// `dsb nshst`.
    DsbNshst,
    /// `dsb nsh`.
    DsbNsh,
    /// `dsb ishst`.
    DsbIshst,
    /// `dsb ish`.
    DsbIsh,
    /// `isb`.
    Isb,
    /// `dsb sy`: a full barrier; also completes table walks in flight (the Cortex-A9
    /// 754322 workaround issues it before a `CONTEXTIDR` write).
    DsbSy,
    /// Write `CONTEXTIDR` (ASID in bits \[7:0\], short descriptors).
    SetContextidr(u32),
    /// Write the 32-bit `TTBR0` (short descriptors: table base and walk attributes).
    SetTtbr0(u32),
    /// Write the 64-bit `TTBR0` (LPAE: table base and, with `TTBCR.A1 = 0`, the ASID).
    SetTtbr0Lpae(u64),
    /// Write `TTBCR`.
    SetTtbcr(u32),
}

/// A system register the context-switch programs ([`crate::switch`]) read.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SysReg {
    /// `MIDR` (which CPU: errata).
    Midr,
    /// `CONTEXTIDR` (short descriptors: the current ASID).
    Contextidr,
    /// `TTBCR`.
    Ttbcr,
    /// The 32-bit `TTBR0`.
    Ttbr0,
    /// The 32-bit `TTBR1`.
    Ttbr1,
    /// The 64-bit `TTBR0` (LPAE).
    Ttbr0Lpae,
    /// The 64-bit `TTBR1` (LPAE).
    Ttbr1Lpae,
}

impl Insn {
    /// The instruction's lower-case mnemonic (`"tlbimvais"`, `"dsb ish"`, ...).
    #[must_use]
    pub const fn mnemonic(&self) -> &'static str {
        match self {
            Insn::Tlbiall => "tlbiall",
            Insn::Tlbimva(_) => "tlbimva",
            Insn::Tlbiasid(_) => "tlbiasid",
            Insn::Tlbimvaa(_) => "tlbimvaa",
            Insn::Bpiall => "bpiall",
            Insn::Tlbiallis => "tlbiallis",
            Insn::Tlbimvais(_) => "tlbimvais",
            Insn::Tlbiasidis(_) => "tlbiasidis",
            Insn::Tlbimvaais(_) => "tlbimvaais",
            Insn::Bpiallis => "bpiallis",
            Insn::DsbNshst => "dsb nshst",
            Insn::DsbNsh => "dsb nsh",
            Insn::DsbIshst => "dsb ishst",
            Insn::DsbIsh => "dsb ish",
            Insn::Isb => "isb",
            Insn::DsbSy => "dsb sy",
            Insn::SetContextidr(_) => "mcr contextidr",
            Insn::SetTtbr0(_) => "mcr ttbr0",
            Insn::SetTtbr0Lpae(_) => "mcrr ttbr0",
            Insn::SetTtbcr(_) => "mcr ttbcr",
        }
    }
}

/// Where a backend's instructions go.
pub trait InsnSink {
    /// Issues (or records) one instruction.
    fn issue(&mut self, insn: Insn);
}

impl<T: InsnSink + ?Sized> InsnSink for &mut T {
    fn issue(&mut self, insn: Insn) {
        (**self).issue(insn)
    }
}

/// An [`InsnSink`] that can also read the system registers a context switch needs: what
/// the switch programs in [`crate::switch`] run on. `Cp15` (ARM only) is the CPU itself;
/// the host CPU model (`tlb::cpu_model`, feature `tlb-model`) executes the same programs
/// against a TLB with ASID-tagged walk caches and speculative walks.
pub trait SysRegs: InsnSink {
    /// Reads `reg` (32-bit registers zero-extended).
    fn read(&mut self, reg: SysReg) -> u64;
}

impl<T: SysRegs + ?Sized> SysRegs for &mut T {
    fn read(&mut self, reg: SysReg) -> u64 {
        (**self).read(reg)
    }
}

/// Executes the instructions on this CPU.
#[cfg(target_arch = "arm")]
#[derive(Clone, Copy, Debug, Default)]
pub struct Cp15;

#[cfg(target_arch = "arm")]
impl InsnSink for Cp15 {
    #[inline(always)]
    fn issue(&mut self, insn: Insn) {
        use crate::arch::{barrier, tlbi};
        use tock_registers::interfaces::Writeable;
        match insn {
            Insn::Tlbiall => tlbi::tlbiall(0),
            Insn::Tlbimva(op) => tlbi::tlbimva(op),
            Insn::Tlbiasid(asid) => tlbi::tlbiasid(u32::from(asid)),
            Insn::Tlbimvaa(op) => tlbi::tlbimvaa(op),
            Insn::Bpiall => tlbi::bpiall(0),
            Insn::Tlbiallis => tlbi::tlbiallis(0),
            Insn::Tlbimvais(op) => tlbi::tlbimvais(op),
            Insn::Tlbiasidis(asid) => tlbi::tlbiasidis(u32::from(asid)),
            Insn::Tlbimvaais(op) => tlbi::tlbimvaais(op),
            Insn::Bpiallis => tlbi::bpiallis(0),
            Insn::DsbNshst => barrier::dsb_nshst(),
            Insn::DsbNsh => barrier::dsb_nsh(),
            Insn::DsbIshst => barrier::dsb_ishst(),
            Insn::DsbIsh => barrier::dsb_ish(),
            Insn::Isb => barrier::isb(),
            Insn::DsbSy => barrier::dsb_sy(),
            Insn::SetContextidr(v) => crate::arch::cp15::CONTEXTIDR.set(v),
            Insn::SetTtbr0(v) => crate::arch::cp15::TTBR0.set(v),
            Insn::SetTtbr0Lpae(v) => crate::arch::cp15::TTBR0_64.set(v),
            Insn::SetTtbcr(v) => crate::arch::cp15::TTBCR.set(v),
        }
    }
}

#[cfg(target_arch = "arm")]
impl SysRegs for Cp15 {
    #[inline(always)]
    fn read(&mut self, reg: SysReg) -> u64 {
        use crate::arch::cp15::{CONTEXTIDR, MIDR, TTBCR, TTBR0, TTBR0_64, TTBR1, TTBR1_64};
        use tock_registers::interfaces::Readable;
        match reg {
            SysReg::Midr => u64::from(MIDR.get()),
            SysReg::Contextidr => u64::from(CONTEXTIDR.get()),
            SysReg::Ttbcr => u64::from(TTBCR.get()),
            SysReg::Ttbr0 => u64::from(TTBR0.get()),
            SysReg::Ttbr1 => u64::from(TTBR1.get()),
            SysReg::Ttbr0Lpae => TTBR0_64.get(),
            SysReg::Ttbr1Lpae => TTBR1_64.get(),
        }
    }
}

/// Records instructions instead of issuing them (host tests of backends and of code that
/// drives them).
#[cfg(any(test, feature = "std"))]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recorder {
    /// Everything issued so far, in order.
    pub log: std::vec::Vec<Insn>,
}

#[cfg(any(test, feature = "std"))]
impl InsnSink for Recorder {
    fn issue(&mut self, insn: Insn) {
        self.log.push(insn);
    }
}

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

/// The ARMv7 TLB backend. `S` issues the instructions: `Cp15` on ARM (see `Cp15Tlb`),
/// `Recorder` (feature `std`) in host tests.
#[derive(Debug)]
pub struct Armv7Tlb<S: InsnSink> {
    sink: S,
    shareability: Shareability,
    errata: ErrataConfig,
    counters: TlbCounters,
    errata_ipis: u64,
    touched: Touched,
}

/// The backend that executes on this CPU.
#[cfg(target_arch = "arm")]
pub type Cp15Tlb = Armv7Tlb<Cp15>;

#[cfg(target_arch = "arm")]
impl Armv7Tlb<Cp15> {
    /// A backend of the shareability this CPU calls for ([`Shareability::detect`]), without errata
    /// workarounds (add them with [`Armv7Tlb::with_errata`]).
    #[must_use]
    pub fn detect() -> Self {
        Self::new(Cp15, Shareability::detect())
    }
}

impl<S: InsnSink> Armv7Tlb<S> {
    /// A backend of `shareability` issuing through `sink`, without errata workarounds.
    #[must_use]
    pub const fn new(sink: S, shareability: Shareability) -> Self {
        Self {
            sink,
            shareability,
            errata: ErrataConfig::NONE,
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

    /// The same backend with these errata workarounds (they only change what the
    /// [`Shareability::InnerShareable`] form issues).
    #[must_use]
    pub fn with_errata(mut self, errata: ErrataConfig) -> Self {
        self.errata = errata;
        self
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

    /// The errata workarounds in effect.
    #[must_use]
    pub const fn errata(&self) -> ErrataConfig {
        self.errata
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

    /// Whether the errata apply: both concern broadcast maintenance only.
    fn broadcast(&self) -> bool {
        self.shareability == Shareability::InnerShareable
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
            Shareability::InnerShareable if self.errata.a9_720789 => {
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
            Shareability::InnerShareable if self.errata.a9_720789 => Insn::Tlbiallis,
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
                if touched != Touched::Nothing && self.broadcast() {
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
        let hook = match self.errata.a15_798181 {
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

//! The instructions the crate's TLB backends and context-switch programs issue, as values.
//!
//! [`Insn`] is one TLB, branch-predictor, barrier or register-write instruction;
//! [`InsnSink`] issues them and [`SysRegs`] also reads the registers a switch program
//! needs ([`SysReg`]). `Cp15` (ARM only) is the CPU itself: each `Insn` becomes the one
//! instruction it names. Host code runs the same programs into a `Recorder` (feature `std`) or the host
//! CPU model (`crate::tlb::cpu_model`), so the order of instructions is tested off target.

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

/// A system register the context-switch programs ([`crate::arch::switch`]) read.
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
/// the switch programs in [`crate::arch::switch`] run on. `Cp15` (ARM only) is the CPU itself;
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
        use super::{barrier, tlbi};
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
            Insn::SetContextidr(v) => super::cp15::CONTEXTIDR.set(v),
            Insn::SetTtbr0(v) => super::cp15::TTBR0.set(v),
            Insn::SetTtbr0Lpae(v) => super::cp15::TTBR0_64.set(v),
            Insn::SetTtbcr(v) => super::cp15::TTBCR.set(v),
        }
    }
}

#[cfg(target_arch = "arm")]
impl SysRegs for Cp15 {
    #[inline(always)]
    fn read(&mut self, reg: SysReg) -> u64 {
        use super::cp15::{CONTEXTIDR, MIDR, TTBCR, TTBR0, TTBR0_64, TTBR1, TTBR1_64};
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A register file that answers each register with its own value.
    struct Regs;

    impl InsnSink for Regs {
        fn issue(&mut self, _: Insn) {}
    }

    impl SysRegs for Regs {
        fn read(&mut self, reg: SysReg) -> u64 {
            0x1000 + reg as u64
        }
    }

    /// Code takes `impl InsnSink` / `impl SysRegs` and is handed `&mut` of the real one
    /// (the switch programs, `Armv7Tlb<&mut Recorder>`): the reference forwards both.
    #[test]
    fn references_forward_issue_and_read() {
        fn issue_through(mut s: impl InsnSink) {
            s.issue(Insn::Isb);
            s.issue(Insn::Tlbiasid(3));
        }
        fn read_through(mut s: impl SysRegs, reg: SysReg) -> u64 {
            s.read(reg)
        }
        let mut r = Recorder::default();
        issue_through(&mut r);
        issue_through(&mut &mut r);
        assert_eq!(
            r.log,
            [Insn::Isb, Insn::Tlbiasid(3), Insn::Isb, Insn::Tlbiasid(3)]
        );
        let mut regs = Regs;
        for reg in [SysReg::Midr, SysReg::Ttbcr, SysReg::Ttbr1Lpae] {
            assert_eq!(read_through(&mut regs, reg), 0x1000 + reg as u64);
        }
    }
}

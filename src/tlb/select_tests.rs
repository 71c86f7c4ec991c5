//! Detection with real register values: broadcast refused with the right reason when
//! `ACTLR` (or `MPIDR`, `ID_MMFR3`) rules it out, the system's errata merged and applied by
//! the backend that detection returns. Each check runs as a function that returns the
//! mismatches it found, so its teeth run the same check over a mutant (the old decision,
//! a merge that loses a CPU, a backend that snapshots its errata) and see it fail.

use core::sync::atomic::{AtomicUsize, Ordering};
use std::format;
use std::string::String;
use std::vec;
use std::vec::Vec;

use super::*;
use crate::addr::VirtAddr;
use crate::tlb::armv7::{ActlrPolicy, Insn, Recorder};
use crate::tlb::errata::{
    A15Workaround, ErrataConfig, ErrataError, IpiHook, IpiTarget, SystemErrata,
};
use crate::tlb::{Armv7Tlb, Asid, TlbBackend};

std::thread_local! {
    static TRUST_THE_WRITE: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
}

/// Mutant for the join teeth: `join_with` claims success after the write without reading
/// `ACTLR` back (on this test thread only).
pub(crate) fn mutant_trust_the_write() -> bool {
    TRUST_THE_WRITE.with(|m| m.get())
}

// ---------------------------------------------------------------------------------------
// Register values

const A9_R0P0: u32 = 0x410F_C090;
const A9_R4P1: u32 = 0x414F_C091;
const A5: u32 = 0x410F_C051;
const A7: u32 = 0x410F_C075;
const A12: u32 = 0x410F_C0D1;
const A15_R2P1: u32 = 0x412F_C0F1;
const A15_R4P0: u32 = 0x414F_C0F0;
const A17: u32 = 0x410F_C0E1;
const B15: u32 = 0x420F_00F2;
/// Cortex-A8: no multiprocessing extensions.
const A8: u32 = 0x413F_C082;
/// A part the crate does not know (Qualcomm implementer, some part number).
const OTHER: u32 = 0x511F_04D0;

/// MPIDR: MP extensions, not uniprocessor, CPU 1.
const SMP: u32 = 0x8000_0001;
/// MPIDR: MP extensions, uniprocessor.
const UP: u32 = 0xC000_0000;
/// MPIDR without the MP extensions.
const NO_MP: u32 = 0;

const SMP_BIT: u32 = 1 << 6;
const FW_BIT: u32 = 1 << 0;

fn mmfr3(bcst: u32) -> u32 {
    0x0210_0211 | (bcst << 12)
}

fn regs(midr: u32, mpidr: u32, actlr: u32) -> CpuRegisters {
    CpuRegisters {
        midr,
        revidr: 0,
        mpidr,
        id_mmfr3: mmfr3(2),
        actlr,
    }
}

use BroadcastReason::*;
use Shareability::{InnerShareable as IS, Local};

fn err(reason: BroadcastReason) -> Result<Shareability, BroadcastUnavailable> {
    Err(BroadcastUnavailable { reason })
}

// ---------------------------------------------------------------------------------------
// The decision

type Decide = fn(&CpuFeatures) -> Result<Shareability, BroadcastUnavailable>;

/// (what, features, expected) for every prerequisite on every known part.
fn decision_table() -> Vec<(
    String,
    CpuFeatures,
    Result<Shareability, BroadcastUnavailable>,
)> {
    let f = |midr, mpidr, bcst, actlr| CpuFeatures::from_registers(midr, mpidr, mmfr3(bcst), actlr);
    let mut t = vec![
        // Cortex-A9 (and A5): SMP and FW both needed.
        (
            "A9 SMP+FW".into(),
            f(A9_R0P0, SMP, 2, SMP_BIT | FW_BIT),
            Ok(IS),
        ),
        (
            "A9 FW = 0".into(),
            f(A9_R0P0, SMP, 2, SMP_BIT),
            err(ActlrFwClear),
        ),
        (
            "A9 SMP = 0".into(),
            f(A9_R0P0, SMP, 2, FW_BIT),
            err(ActlrSmpClear),
        ),
        (
            "A9 ACTLR = 0".into(),
            f(A9_R4P1, SMP, 2, 0),
            err(ActlrSmpClear),
        ),
        ("A5 SMP+FW".into(), f(A5, SMP, 2, SMP_BIT | FW_BIT), Ok(IS)),
        (
            "A5 FW = 0".into(),
            f(A5, SMP, 2, SMP_BIT),
            err(ActlrFwClear),
        ),
        // A15: bit 0 is not FW there, and not needed.
        (
            "A15 SMP = 0".into(),
            f(A15_R2P1, SMP, 2, FW_BIT),
            err(ActlrSmpClear),
        ),
        (
            "A15 QEMU ACTLR".into(),
            f(A15_R4P0, SMP, 2, 0),
            err(ActlrSmpClear),
        ),
        ("A15 SMP".into(), f(A15_R2P1, SMP, 2, SMP_BIT), Ok(IS)),
        ("A7 SMP = 0".into(), f(A7, SMP, 2, 0), err(ActlrSmpClear)),
        (
            "A7 SMP".into(),
            f(A7, SMP, 2, SMP_BIT | 0xFFFF_0000),
            Ok(IS),
        ),
        ("A12 SMP".into(), f(A12, SMP, 2, SMP_BIT), Ok(IS)),
        ("A17 SMP = 0".into(), f(A17, SMP, 2, 0), err(ActlrSmpClear)),
        ("B15 SMP".into(), f(B15, SMP, 2, SMP_BIT), Ok(IS)),
        ("B15 SMP = 0".into(), f(B15, SMP, 2, 0), err(ActlrSmpClear)),
        // Unknown part: ACTLR meaningless to the crate.
        (
            "unknown part".into(),
            f(OTHER, SMP, 2, SMP_BIT | FW_BIT),
            err(UnknownPart {
                implementer: 0x51,
                part: 0x04D,
            }),
        ),
        // MPIDR and ID_MMFR3 come first.
        ("A8 no MP".into(), f(A8, NO_MP, 0, 0), err(NoMpExtensions)),
        (
            "A15 no MP".into(),
            f(A15_R4P0, NO_MP, 2, SMP_BIT),
            err(NoMpExtensions),
        ),
        (
            "A15 bcst 1".into(),
            f(A15_R4P0, SMP, 1, SMP_BIT),
            err(MaintenanceBroadcast(1)),
        ),
        (
            "A9 bcst 0".into(),
            f(A9_R0P0, SMP, 0, 0x41),
            err(MaintenanceBroadcast(0)),
        ),
        ("bcst 3".into(), f(A15_R4P0, SMP, 3, SMP_BIT), Ok(IS)),
        // A uniprocessor is local, whatever ACTLR says: correct, not an error.
        ("A9 UP".into(), f(A9_R0P0, UP, 2, 0), Ok(Local)),
        ("A15 UP".into(), f(A15_R2P1, UP, 0, 0), Ok(Local)),
        // The kernel's word skips the ACTLR check only.
        (
            "A15 assumed".into(),
            f(A15_R4P0, SMP, 2, 0).assume_actlr_effective(),
            Ok(IS),
        ),
        (
            "unknown assumed".into(),
            f(OTHER, SMP, 2, 0).assume_actlr_effective(),
            Ok(IS),
        ),
        (
            "assumed, bcst 1".into(),
            f(A15_R4P0, SMP, 1, 0).assume_actlr_effective(),
            err(MaintenanceBroadcast(1)),
        ),
        (
            "assumed, no MP".into(),
            f(A15_R4P0, NO_MP, 2, 0).assume_actlr_effective(),
            err(NoMpExtensions),
        ),
    ];
    // Every ACTLR value with only the needed bits varied, on each known part.
    for midr in [A5, A7, A9_R0P0, A12, A15_R2P1, A17, B15] {
        let fw = ActlrBits::for_part(MainId::from_midr(midr)).unwrap().fw;
        for actlr in [0, FW_BIT, SMP_BIT, SMP_BIT | FW_BIT] {
            let want = if actlr & SMP_BIT == 0 {
                err(ActlrSmpClear)
            } else if fw && actlr & FW_BIT == 0 {
                err(ActlrFwClear)
            } else {
                Ok(IS)
            };
            t.push((
                format!("{midr:#x} ACTLR {actlr:#x}"),
                f(midr, SMP, 2, actlr),
                want,
            ));
        }
    }
    t
}

fn check_decision(decide: Decide) -> Vec<String> {
    decision_table()
        .into_iter()
        .filter_map(|(what, f, want)| {
            let got = decide(&f);
            (got != want).then(|| format!("{what}: got {got:?}, want {want:?}"))
        })
        .collect()
}

#[test]
fn broadcast_only_when_effective_with_the_reason_otherwise() {
    let bad = check_decision(CpuFeatures::broadcast);
    assert!(bad.is_empty(), "{bad:#?}");
}

/// The decision before ACTLR was read: MPIDR and ID_MMFR3 only, and a silent local
/// backend for an SMP CPU without broadcast.
fn old_decision(f: &CpuFeatures) -> Result<Shareability, BroadcastUnavailable> {
    Ok(if f.smp() && f.tlb_broadcast() {
        IS
    } else {
        Local
    })
}

#[test]
fn teeth_the_old_decision_is_caught() {
    let bad = check_decision(old_decision);
    // A9 FW = 0, A15 SMP = 0, A7 SMP = 0 are among what it gets wrong.
    for what in [
        "A9 FW = 0",
        "A15 SMP = 0",
        "A7 SMP = 0",
        "A15 bcst 1",
        "A8 no MP",
    ] {
        assert!(
            bad.iter().any(|b| b.starts_with(&format!("{what}:"))),
            "{what} not caught: {bad:#?}"
        );
    }
    // A decision that ignores only FW is caught too.
    let no_fw: Decide = |f| match f.broadcast() {
        Err(BroadcastUnavailable {
            reason: ActlrFwClear,
        }) => Ok(IS),
        other => other,
    };
    assert!(!check_decision(no_fw).is_empty());
}

#[test]
fn ipi_shootdown_needed_exactly_when_broadcast_is_refused() {
    for (what, f, want) in decision_table() {
        assert_eq!(f.needs_ipi_shootdown(), want.is_err(), "{what}");
    }
}

#[test]
fn unknown_parts_and_part_table() {
    assert_eq!(ActlrBits::for_part(MainId::from_midr(OTHER)), None);
    // Same part number from another implementer is not that part.
    assert_eq!(ActlrBits::for_part(MainId::from_midr(0x510F_C0F0)), None);
    assert_eq!(ActlrBits::for_part(MainId::from_midr(A8)), None);
    assert_eq!(
        ActlrBits::for_part(MainId::from_midr(A9_R0P0)).map(ActlrBits::mask),
        Some(0x41)
    );
    assert_eq!(
        ActlrBits::for_part(MainId::from_midr(A15_R2P1)).map(ActlrBits::mask),
        Some(0x40)
    );
}

// ---------------------------------------------------------------------------------------
// Setting the bits

/// An `ACTLR` that keeps what is written (`sticks`) or reads as zero and ignores writes
/// (QEMU's), or keeps only `SMP` (Non-secure A5/A9 with `NSACR.NS_SMP`).
struct FakeActlr {
    value: u32,
    writable: u32,
    writes: usize,
}

impl FakeActlr {
    fn join(&mut self, midr: u32) -> Result<Joined, JoinError> {
        let cell = core::cell::RefCell::new(self);
        join_with(
            midr,
            || cell.borrow().value,
            |v| {
                let mut r = cell.borrow_mut();
                let w = r.writable;
                r.value = (r.value & !w) | (v & w);
                r.writes += 1;
            },
        )
    }
}

fn check_join() -> Vec<String> {
    let bad = core::cell::RefCell::new(Vec::new());
    let expect = |what: &str, got: Result<Joined, JoinError>, want: Result<Joined, JoinError>| {
        if got != want {
            bad.borrow_mut()
                .push(format!("{what}: got {got:?}, want {want:?}"));
        }
    };
    // A writable ACTLR: bits set, others kept.
    let mut r = FakeActlr {
        value: 0x1000,
        writable: !0,
        writes: 0,
    };
    expect("A9 writable", r.join(A9_R0P0), Ok(Joined::Set));
    let value = r.value;
    if value != 0x1041 {
        bad.borrow_mut()
            .push(format!("A9 ACTLR {value:#x} after the join, want 0x1041"));
    }
    // Already set: nothing written (a forbidden write could trap).
    let writes = r.writes;
    expect("A9 again", r.join(A9_R0P0), Ok(Joined::AlreadySet));
    if r.writes != writes {
        bad.borrow_mut()
            .push("wrote ACTLR although the bits were set".into());
    }
    // QEMU: RAZ/WI.
    let mut r = FakeActlr {
        value: 0,
        writable: 0,
        writes: 0,
    };
    expect(
        "A15 RAZ/WI",
        r.join(A15_R4P0),
        Err(JoinError::DidNotStick {
            wanted: 0x40,
            actlr: 0,
        }),
    );
    // Non-secure A9 with NSACR.NS_SMP: SMP sticks, FW does not.
    let mut r = FakeActlr {
        value: 0,
        writable: SMP_BIT,
        writes: 0,
    };
    expect(
        "A9 NS",
        r.join(A9_R0P0),
        Err(JoinError::DidNotStick {
            wanted: 0x41,
            actlr: 0x40,
        }),
    );
    // Unknown part: nothing written.
    let mut r = FakeActlr {
        value: 0,
        writable: !0,
        writes: 0,
    };
    expect(
        "unknown",
        r.join(OTHER),
        Err(JoinError::UnknownPart {
            implementer: 0x51,
            part: 0x04D,
        }),
    );
    if r.writes != 0 {
        bad.borrow_mut()
            .push("wrote the ACTLR of an unknown part".into());
    }
    bad.into_inner()
}

#[test]
fn join_sets_the_bits_and_reports_when_they_do_not_stick() {
    let bad = check_join();
    assert!(bad.is_empty(), "{bad:#?}");
    // And what it sets is what detection then accepts.
    for midr in [A5, A7, A9_R0P0, A12, A15_R2P1, A17, B15] {
        let mut r = FakeActlr {
            value: 0,
            writable: !0,
            writes: 0,
        };
        r.join(midr).unwrap();
        let f = CpuFeatures::from_registers(midr, SMP, mmfr3(2), r.value);
        assert_eq!(f.broadcast(), Ok(IS), "{midr:#x}");
    }
}

#[test]
fn teeth_a_join_that_trusts_its_write_is_caught() {
    TRUST_THE_WRITE.with(|m| m.set(true));
    let bad = check_join();
    TRUST_THE_WRITE.with(|m| m.set(false));
    assert!(bad.iter().any(|b| b.starts_with("A15 RAZ/WI")), "{bad:#?}");
    assert!(bad.iter().any(|b| b.starts_with("A9 NS")), "{bad:#?}");
}

// ---------------------------------------------------------------------------------------
// Errata: merge

fn hook_a(_: IpiTarget) {}

/// All 12 configurations.
fn all_configs() -> Vec<ErrataConfig> {
    let mut v = Vec::new();
    for a9_720789 in [false, true] {
        for a9_754322 in [false, true] {
            for a15_798181 in [
                A15Workaround::Off,
                A15Workaround::DummyInvalidate,
                A15Workaround::DummyInvalidateAndIpi(hook_a),
            ] {
                v.push(ErrataConfig {
                    a9_720789,
                    a9_754322,
                    a15_798181,
                });
            }
        }
    }
    v
}

fn strength(w: A15Workaround) -> u8 {
    match w {
        A15Workaround::Off => 0,
        A15Workaround::DummyInvalidate => 1,
        A15Workaround::DummyInvalidateAndIpi(_) => 2,
    }
}

type Merge = fn(ErrataConfig, ErrataConfig) -> ErrataConfig;

fn check_merge(merge: Merge) -> Vec<String> {
    let mut bad = Vec::new();
    let all = all_configs();
    for &a in &all {
        for &b in &all {
            let m = merge(a, b);
            let union = m.a9_720789 == (a.a9_720789 || b.a9_720789)
                && m.a9_754322 == (a.a9_754322 || b.a9_754322)
                && strength(m.a15_798181) == strength(a.a15_798181).max(strength(b.a15_798181));
            if !union {
                bad.push(format!("{a:?} + {b:?} = {m:?}: not the union"));
            }
            if merge(b, a) != m {
                bad.push(format!("{a:?} + {b:?}: not commutative"));
            }
            for &c in &all {
                if merge(merge(a, b), c) != merge(a, merge(b, c)) {
                    bad.push(format!("{a:?} + {b:?} + {c:?}: not associative"));
                }
            }
        }
        if merge(a, a) != a || merge(a, ErrataConfig::NONE) != a {
            bad.push(format!(
                "{a:?}: NONE is not the identity or merge not idempotent"
            ));
        }
    }
    bad
}

#[test]
fn merge_is_the_union_over_all_combinations() {
    let bad = check_merge(ErrataConfig::merge);
    assert!(bad.is_empty(), "{bad:#?}");
}

#[test]
fn teeth_merges_that_lose_a_cpu_are_caught() {
    let first_wins: Merge = |a, _| a;
    let last_798181_wins: Merge = |a, b| ErrataConfig {
        a15_798181: b.a15_798181,
        ..a.merge(b)
    };
    let intersection: Merge = |a, b| ErrataConfig {
        a9_720789: a.a9_720789 && b.a9_720789,
        ..a.merge(b)
    };
    for m in [first_wins, last_798181_wins, intersection] {
        assert!(!check_merge(m).is_empty());
    }
}

// ---------------------------------------------------------------------------------------
// Errata: the system accumulator

/// Records `cpus` (MIDR, REVIDR) in order into `sys` and returns what it then says.
fn record_all(sys: &SystemErrata, cpus: &[(u32, u32)]) -> ErrataConfig {
    for &(midr, revidr) in cpus {
        let _ = sys.record_cpu(midr, revidr);
    }
    sys.current()
}

/// Every order of a mixed system gives the fold of the per-CPU configurations.
fn check_system_orders() -> Vec<String> {
    let cpus = [
        (A7, 0),
        (A15_R2P1, 0),
        (A9_R0P0, 0),
        (0x412F_C092, 0),
        (A15_R4P0, 0),
    ];
    let mut bad = Vec::new();
    let want = cpus.iter().fold(ErrataConfig::NONE, |acc, &(m, r)| {
        acc.merge(ErrataConfig::for_cpu(m, r, Some(hook_a)).unwrap())
    });
    // All rotations and their reverses (every CPU first and last at least once).
    for start in 0..cpus.len() {
        for reverse in [false, true] {
            let mut order: Vec<_> = cpus
                .iter()
                .cycle()
                .skip(start)
                .take(cpus.len())
                .copied()
                .collect();
            if reverse {
                order.reverse();
            }
            let sys = SystemErrata::new(Some(hook_a));
            let got = record_all(&sys, &order);
            if got != want {
                bad.push(format!("order {order:x?}: {got:?}, want {want:?}"));
            }
        }
    }
    bad
}

#[test]
fn system_errata_are_every_cpus_whatever_the_order() {
    let bad = check_system_orders();
    assert!(bad.is_empty(), "{bad:#?}");
    // big.LITTLE booting on the A7: the A15s' 798181 is there.
    let sys = SystemErrata::new(Some(hook_a));
    assert_eq!(sys.record_cpu(A7, 0), Ok(ErrataConfig::NONE));
    assert_eq!(sys.current(), ErrataConfig::NONE);
    sys.record_cpu(A15_R2P1, 0).unwrap();
    sys.record_cpu(A7, 0).unwrap();
    assert_eq!(
        sys.current().a15_798181,
        A15Workaround::DummyInvalidateAndIpi(hook_a)
    );
}

#[test]
fn teeth_a_last_writer_wins_accumulator_is_caught() {
    let bad = crate::tlb::errata::tests::with_last_writer_wins(check_system_orders);
    assert!(!bad.is_empty());
}

#[test]
fn a_cpu_needing_the_ipi_without_a_hook_is_an_error_not_a_silent_partial() {
    let sys = SystemErrata::new(None);
    assert_eq!(
        sys.record_cpu(A15_R2P1, 0),
        Err(ErrataError::IpiHookRequired)
    );
    // What could be kept is kept: the dummy invalidate.
    assert_eq!(sys.current().a15_798181, A15Workaround::DummyInvalidate);
    // Partial (r2p2 with the ECO fix) needs no hook.
    let sys = SystemErrata::new(None);
    assert!(sys.record_cpu(0x412F_C0F2, 1 << 4).is_ok());
    assert_eq!(sys.current().a15_798181, A15Workaround::DummyInvalidate);
}

// ---------------------------------------------------------------------------------------
// The backend detection returns

/// One batch: an invalidate of one page for ASID 5 and of ASID 5; the log.
fn batch(b: &mut Armv7Tlb<Recorder>) -> Vec<Insn> {
    b.sink_mut().log.clear();
    b.prepare();
    b.invalidate_va(VirtAddr::new(0x0040_3000), Asid(5));
    b.invalidate_asid(Asid(5));
    b.complete();
    b.sink().log.clone()
}

/// The A9 r0p0 registers as the README's sketch meets them (ACTLR as its bring-up leaves
/// it: SMP and FW set).
fn a9_r0p0() -> CpuRegisters {
    regs(A9_R0P0, SMP, SMP_BIT | FW_BIT)
}

fn check_720789(b: &mut Armv7Tlb<Recorder>) -> Vec<String> {
    let log = batch(b);
    let want = vec![
        Insn::DsbIshst,
        Insn::Tlbimvaais(0x0040_3000),
        Insn::Tlbiallis,
        Insn::DsbIsh,
        Insn::Isb,
    ];
    if log == want {
        Vec::new()
    } else {
        vec![format!("A9 r0p0 batch {log:x?}, want {want:x?}")]
    }
}

#[test]
fn readme_path_on_an_a9_r0p0_gives_the_720789_substitutions() {
    static SYS: SystemErrata = SystemErrata::new(None);
    let mut b = Armv7Tlb::for_cpu(Recorder::default(), &a9_r0p0(), ActlrPolicy::Check, &SYS)
        .expect("an A9 r0p0 with SMP and FW broadcasts");
    assert_eq!(b.shareability(), IS);
    assert!(b.errata().a9_720789);
    let bad = check_720789(&mut b);
    assert!(bad.is_empty(), "{bad:#?}");
    // The same board with FW left clear is refused, not silently local.
    static SYS2: SystemErrata = SystemErrata::new(None);
    let r = Armv7Tlb::for_cpu(
        Recorder::default(),
        &regs(A9_R0P0, SMP, SMP_BIT),
        ActlrPolicy::Check,
        &SYS2,
    );
    assert_eq!(
        r.err(),
        Some(DetectError::Broadcast(BroadcastUnavailable {
            reason: ActlrFwClear
        }))
    );
}

#[test]
fn teeth_the_old_detect_without_errata_is_caught_on_an_a9_r0p0() {
    // What `Cp15Tlb::detect()` used to return there: inner shareable, no errata.
    let mut b = Armv7Tlb::new(Recorder::default(), IS);
    assert!(!check_720789(&mut b).is_empty());
    // And the explicit opt-out is exactly that.
    static SYS: SystemErrata = SystemErrata::new(None);
    let mut b = Armv7Tlb::for_cpu(Recorder::default(), &a9_r0p0(), ActlrPolicy::Check, &SYS)
        .unwrap()
        .without_errata();
    assert!(!check_720789(&mut b).is_empty());
}

/// IPI hook calls per test (each test has its own hook and counter).
macro_rules! counting_hook {
    ($hook:ident, $count:ident) => {
        static $count: AtomicUsize = AtomicUsize::new(0);
        fn $hook(t: IpiTarget) {
            assert_eq!(t, IpiTarget::Asid(Asid(5)));
            $count.fetch_add(1, Ordering::SeqCst);
        }
    };
}

/// The 798181 part of a batch's log after the completion `dsb ish`, and the hook calls.
fn check_798181(b: &mut Armv7Tlb<Recorder>, calls: &AtomicUsize, want_ipi: bool) -> Vec<String> {
    let before = calls.load(Ordering::SeqCst);
    let log = batch(b);
    let ipis = calls.load(Ordering::SeqCst) - before;
    let tail = if want_ipi {
        vec![Insn::DsbIsh, Insn::Tlbimvais(0), Insn::DsbIsh, Insn::Isb]
    } else {
        vec![Insn::DsbIsh, Insn::Isb]
    };
    let mut bad = Vec::new();
    if !log.ends_with(&tail) {
        bad.push(format!("log {log:x?} does not end with {tail:x?}"));
    }
    if ipis != usize::from(want_ipi) {
        bad.push(format!(
            "{ipis} IPI hook calls, want {}",
            usize::from(want_ipi)
        ));
    }
    bad
}

#[test]
fn a15_798181_full_calls_the_hook_through_the_detected_backend() {
    counting_hook!(hook, CALLS);
    static SYS: SystemErrata = SystemErrata::new(Some(hook as IpiHook));
    // Forced values: an affected A15 (QEMU's is r4p0).
    let mut b = Armv7Tlb::for_cpu(
        Recorder::default(),
        &regs(A15_R2P1, SMP, SMP_BIT),
        ActlrPolicy::Check,
        &SYS,
    )
    .unwrap();
    let bad = check_798181(&mut b, &CALLS, true);
    assert!(bad.is_empty(), "{bad:#?}");
    assert_eq!(b.errata_ipis(), 1);
    // Without a hook, detection of that CPU refuses instead of applying half of it.
    static NO_HOOK: SystemErrata = SystemErrata::new(None);
    let r = Armv7Tlb::for_cpu(
        Recorder::default(),
        &regs(A15_R2P1, SMP, SMP_BIT),
        ActlrPolicy::Check,
        &NO_HOOK,
    );
    assert_eq!(
        r.err(),
        Some(DetectError::Errata(ErrataError::IpiHookRequired))
    );
    // Nor may another CPU of that system (big.LITTLE: the A7) get a backend that would
    // apply half of it.
    let r = Armv7Tlb::for_cpu(
        Recorder::default(),
        &regs(A7, SMP, SMP_BIT),
        ActlrPolicy::Check,
        &NO_HOOK,
    );
    assert_eq!(
        r.err(),
        Some(DetectError::Errata(ErrataError::IpiHookRequired))
    );
    // ... unless it is a uniprocessor, which is local and needs none.
    static UP_SYS: SystemErrata = SystemErrata::new(None);
    let b = Armv7Tlb::for_cpu(
        Recorder::default(),
        &regs(A15_R2P1, UP, 0),
        ActlrPolicy::Check,
        &UP_SYS,
    )
    .unwrap();
    assert_eq!(b.shareability(), Local);
}

#[test]
fn unaffected_cpus_merged_alone_never_call_the_hook() {
    counting_hook!(hook, CALLS);
    static SYS: SystemErrata = SystemErrata::new(Some(hook as IpiHook));
    let mut b = Armv7Tlb::for_cpu(
        Recorder::default(),
        &regs(A7, SMP, SMP_BIT),
        ActlrPolicy::Check,
        &SYS,
    )
    .unwrap();
    SYS.record_cpu(A15_R4P0, 0).unwrap();
    SYS.record_cpu(A7, 0).unwrap();
    let bad = check_798181(&mut b, &CALLS, false);
    assert!(bad.is_empty(), "{bad:#?}");
    assert_eq!(b.counters().errata, 0);
}

#[test]
fn big_little_booting_on_the_a7_applies_the_a15s_798181() {
    counting_hook!(hook, CALLS);
    static SYS: SystemErrata = SystemErrata::new(Some(hook as IpiHook));
    // The boot CPU is an A7; its backend exists before the A15s come up.
    let mut b = Armv7Tlb::for_cpu(
        Recorder::default(),
        &regs(A7, SMP, SMP_BIT),
        ActlrPolicy::Check,
        &SYS,
    )
    .unwrap();
    assert!(check_798181(&mut b, &CALLS, false).is_empty());
    SYS.record_cpu(A15_R2P1, 0).unwrap();
    let bad = check_798181(&mut b, &CALLS, true);
    assert!(bad.is_empty(), "{bad:#?}");
}

#[test]
fn teeth_a_backend_that_snapshots_its_errata_misses_the_a15s() {
    counting_hook!(hook, CALLS);
    static SYS: SystemErrata = SystemErrata::new(Some(hook as IpiHook));
    let b = Armv7Tlb::for_cpu(
        Recorder::default(),
        &regs(A7, SMP, SMP_BIT),
        ActlrPolicy::Check,
        &SYS,
    )
    .unwrap();
    // The mutant: the boot CPU's configuration copied at creation.
    let mut b = b.with_errata(SYS.current());
    SYS.record_cpu(A15_R2P1, 0).unwrap();
    assert!(!check_798181(&mut b, &CALLS, true).is_empty());
}

#[test]
fn qemu_values_are_refused_unless_the_kernel_vouches() {
    static SYS: SystemErrata = SystemErrata::new(None);
    // QEMU's Cortex-A15 on virt -smp 4: ACTLR reads 0.
    let qemu = regs(A15_R4P0, 0x8000_0002, 0);
    assert_eq!(
        Armv7Tlb::for_cpu(Recorder::default(), &qemu, ActlrPolicy::Check, &SYS).err(),
        Some(DetectError::Broadcast(BroadcastUnavailable {
            reason: ActlrSmpClear
        }))
    );
    let b = Armv7Tlb::for_cpu(
        Recorder::default(),
        &qemu,
        ActlrPolicy::AssumeEffective,
        &SYS,
    )
    .unwrap();
    assert_eq!(b.shareability(), IS);
    assert_eq!(b.errata(), ErrataConfig::NONE);
    // Forcing works whatever the registers, with the errata still applied.
    static SYS_A9: SystemErrata = SystemErrata::new(None);
    let mut b = Armv7Tlb::forced_for_cpu(Recorder::default(), IS, A9_R0P0, 0, &SYS_A9).unwrap();
    assert!(check_720789(&mut b).is_empty());
}

/// Every refusal says which prerequisite failed, in words a kernel log can show.
#[test]
fn refusals_name_their_reason() {
    let cases = [
        (BroadcastReason::NoMpExtensions, "multiprocessing"),
        (BroadcastReason::MaintenanceBroadcast(1), "MaintBcst = 1"),
        (BroadcastReason::ActlrSmpClear, "ACTLR.SMP"),
        (BroadcastReason::ActlrFwClear, "ACTLR.FW"),
        (BroadcastReason::ActlrDvmDisabled, "ACTLR.DDVM"),
        (
            BroadcastReason::UnknownPart {
                implementer: 0x51,
                part: 0x2d,
            },
            "0x51",
        ),
    ];
    for (reason, words) in cases {
        let text = format!("{}", BroadcastUnavailable { reason });
        assert!(text.contains("not effective"), "{text}");
        assert!(text.contains(words), "{reason:?}: {text}");
    }
}

/// `smp()`: the multiprocessing extensions, and not a uniprocessor.
#[test]
fn smp_needs_mp_extensions_and_no_uniprocessor_flag() {
    let mmfr3 = 2 << 12;
    let a15 = 0x412F_C0F1;
    let f = |mpidr: u32| CpuFeatures::from_registers(a15, mpidr, mmfr3, 1 << 6);
    assert!(f(0x8000_0001).smp(), "MP, not U");
    assert!(!f(0xC000_0000).smp(), "MP and U: a uniprocessor");
    assert!(!f(0x0000_0000).smp(), "no MP extensions");
    assert!(!f(0x4000_0000).smp(), "U without MP");
}

/// A join keeps the bits already set: an A9 with `SMP` set and `FW` clear gets `FW` added,
/// not `SMP` toggled off.
#[test]
fn a_join_adds_the_missing_bit_and_keeps_the_rest() {
    let a9 = 0x410F_C090;
    assert_eq!(actlr_join_value(a9, 1 << 6), Ok(Some((1 << 6) | 1)));
    assert_eq!(actlr_join_value(a9, 1), Ok(Some((1 << 6) | 1)));
    assert_eq!(actlr_join_value(a9, (1 << 6) | 1 | (1 << 2)), Ok(None));
}

/// The other refusals' texts say what went wrong.
#[test]
fn join_and_detect_errors_say_why() {
    let t = format!(
        "{}",
        JoinError::DidNotStick {
            wanted: 0x41,
            actlr: 0
        }
    );
    assert!(t.contains("0x41") && t.contains("did not stick"), "{t}");
    let t = format!(
        "{}",
        JoinError::UnknownPart {
            implementer: 0x51,
            part: 0x2d
        }
    );
    assert!(t.contains("0x51") && t.contains("not known"), "{t}");
    let t = format!(
        "{}",
        DetectError::Broadcast(BroadcastUnavailable {
            reason: BroadcastReason::ActlrSmpClear
        })
    );
    assert!(t.contains("ACTLR.SMP"), "{t}");
    let t = format!(
        "{}",
        DetectError::Errata(crate::tlb::errata::ErrataError::IpiHookRequired)
    );
    assert!(t.contains("IPI hook"), "{t}");
}

//! Host test: shareable Normal memory is *Inner* Shareable in both descriptor formats, the
//! domain the table walks, the barriers (`dsb ish`) and the TLB broadcasts (`TLBI*IS`) of
//! the crate work in.
//!
//! Each format's leaves are decoded from their raw bits the way the hardware reads them
//! (Arm ARM, VMSAv7: short descriptors under TEX remap through `PRRR`/`NMRR`; long
//! descriptors through `SH[1:0]` and `MAIRn`), not through the crate's own decoders, and
//! compared with the shareability of the walks. The walk attributes are set by
//! `arch::mmu::ttbr_value` and `arch::lpae::enable`, which build only for ARM; their values
//! are restated here as constants (change both together).

use std::vec::Vec;

use super::attrs::{Access, Attributes, Execute, MemoryType};
use crate::lpae::attrs::{MAIR0, MAIR1};
use crate::lpae::descriptor::{Desc, DescKind};
use crate::short::descriptor::{L1Desc, L2Desc};
use crate::short::{NMRR, PRRR};
use crate::sink::MapSize;

/// A shareability domain.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Domain {
    NonShareable,
    Inner,
    Outer,
}

/// What a short-descriptor leaf is under TEX remap.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Remapped {
    StronglyOrdered,
    Device {
        shareable: bool,
    },
    /// `NMRR.IRn`, `NMRR.ORn` and the domain.
    Normal {
        inner: u32,
        outer: u32,
        domain: Domain,
    },
}

/// The walk bits `arch::mmu::ttbr_value` puts in `TTBR0`/`TTBR1` on a CPU with the
/// multiprocessing extensions (every CPU with an inner-shareable TLB broadcast): `S`
/// (bit 1) and `NOS` (bit 5), with the cacheability bits `IRGN[0]` (6) and `RGN = 01`.
const TTBR_WALK: u32 = (1 << 6) | (1 << 5) | (0b01 << 3) | (1 << 1);
/// `TTBCR.SH0` (and `SH1`) `arch::lpae::enable` programs: `0b11`.
const TTBCR_SH_WALK: u64 = 0b11;

/// The domain of short-descriptor walks with this `TTBR` (`S` bit 1; `NOS` bit 5: 0 outer,
/// 1 inner shareable).
fn ttbr_domain(ttbr: u32) -> Domain {
    match (ttbr & (1 << 1) != 0, ttbr & (1 << 5) != 0) {
        (false, _) => Domain::NonShareable,
        (true, false) => Domain::Outer,
        (true, true) => Domain::Inner,
    }
}

/// The domain of a long-descriptor `SH[1:0]` value (in a descriptor or `TTBCR.SHn`).
fn sh_domain(sh: u64) -> Domain {
    match sh {
        0b00 => Domain::NonShareable,
        0b10 => Domain::Outer,
        0b11 => Domain::Inner,
        _ => panic!("SH = 0b01 is reserved"),
    }
}

/// What `TEX[0]:C:B = n` with `S = s` means under `prrr`/`nmrr`: `TRn` at bits
/// `[2n+1:2n]`, `DS0`/`DS1` at 16/17, `NS0`/`NS1` at 18/19, `NOSn` at `24 + n`; `NMRR`
/// `IRn` at `[2n+1:2n]`, `ORn` at `[2n+17:2n+16]`.
fn remap(prrr: u32, nmrr: u32, n: u32, s: bool) -> Remapped {
    let bit = |b: u32| prrr >> b & 1 != 0;
    match prrr >> (2 * n) & 3 {
        0 => Remapped::StronglyOrdered,
        1 => Remapped::Device {
            shareable: bit(16 + u32::from(s)),
        },
        2 => Remapped::Normal {
            inner: nmrr >> (2 * n) & 3,
            outer: nmrr >> (16 + 2 * n) & 3,
            domain: match (bit(18 + u32::from(s)), bit(24 + n)) {
                (false, _) => Domain::NonShareable,
                (true, false) => Domain::Outer,
                (true, true) => Domain::Inner,
            },
        },
        _ => panic!("TR{n} = 0b11 is reserved"),
    }
}

/// `(TEX[0]:C:B, S)` of the short leaves the crate writes for `attrs`: section,
/// supersection (TEX at \[14:12\], S bit 16), large page (TEX \[14:12\], S bit 10), small
/// page (TEX \[8:6\], S bit 10); B bit 2, C bit 3 in all. Checks they agree.
fn short_index_and_s(attrs: Attributes) -> (u32, bool) {
    let cb = |d: u32| d >> 2 & 3;
    let l1 = |d: u32| (d >> 12 & 1) << 2 | cb(d);
    let section = L1Desc::section(0x4010_0000, attrs).raw();
    let supersection = L1Desc::supersection(0x4100_0000, attrs).raw();
    let large = L2Desc::large(0x4001_0000, attrs).raw();
    let small = L2Desc::small(0x4000_1000, attrs).raw();
    let all = [
        (l1(section), section >> 16 & 1 != 0),
        (l1(supersection), supersection >> 16 & 1 != 0),
        (l1(large), large >> 10 & 1 != 0),
        ((small >> 6 & 1) << 2 | cb(small), small >> 10 & 1 != 0),
    ];
    assert!(all.iter().all(|x| *x == all[0]), "{attrs:?}: {all:?}");
    all[0]
}

/// `NMRR` policy (0 non-cacheable, 1 WB-WA, 2 WT, 3 WB no-WA) and `MAIR` byte of a Normal
/// type, as the Arm ARM encodes them.
fn normal_policy(m: MemoryType) -> (u32, u64) {
    match m {
        MemoryType::NormalNonCacheable => (0, 0x44),
        MemoryType::NormalWriteBack => (1, 0xff),
        MemoryType::NormalWriteThrough => (2, 0xaa),
        MemoryType::NormalWriteBackNoAllocate => (3, 0xee),
        _ => unreachable!(),
    }
}

fn normal_types() -> Vec<MemoryType> {
    MemoryType::ALL
        .into_iter()
        .filter(|m| m.is_normal())
        .collect()
}

fn attrs(memory: MemoryType, shareable: bool) -> Attributes {
    Attributes {
        memory,
        shareable,
        ..Attributes::KERNEL_DATA
    }
}

#[test]
fn walks_are_inner_shareable() {
    assert_eq!(ttbr_domain(TTBR_WALK), Domain::Inner);
    assert_eq!(sh_domain(TTBCR_SH_WALK), Domain::Inner);
}

#[test]
fn short_shareable_normal_is_inner_shareable_like_the_walks() {
    let walks = ttbr_domain(TTBR_WALK);
    let types = normal_types();
    assert_eq!(types.len(), 4);
    for m in types {
        for shareable in [false, true] {
            let (n, s) = short_index_and_s(attrs(m, shareable));
            assert_eq!(s, shareable, "{m:?}: S bit");
            let want = Remapped::Normal {
                inner: normal_policy(m).0,
                outer: normal_policy(m).0,
                domain: if shareable {
                    walks
                } else {
                    Domain::NonShareable
                },
            };
            assert_eq!(
                remap(PRRR, NMRR, n, s),
                want,
                "{m:?} shareable={shareable}: slot {n} under PRRR {PRRR:#010x}"
            );
        }
    }
    // Device memory is shareable whatever S says, strongly-ordered always is.
    for shareable in [false, true] {
        let (n, s) = short_index_and_s(attrs(MemoryType::Device, shareable));
        assert_eq!(
            remap(PRRR, NMRR, n, s),
            Remapped::Device { shareable: true }
        );
        let (n, s) = short_index_and_s(attrs(MemoryType::StronglyOrdered, shareable));
        assert_eq!(remap(PRRR, NMRR, n, s), Remapped::StronglyOrdered);
    }
}

#[test]
fn lpae_shareable_normal_is_inner_shareable_like_the_walks() {
    let walks = sh_domain(TTBCR_SH_WALK);
    for m in normal_types() {
        for shareable in [false, true] {
            let a = attrs(m, shareable);
            let d = Desc::leaf(MapSize::Page4K, 0x1_2345_6000, a).raw();
            let want = if shareable {
                walks
            } else {
                Domain::NonShareable
            };
            assert_eq!(
                sh_domain(d >> 8 & 3),
                want,
                "{m:?} shareable={shareable}: {d:#x}"
            );
            // The MAIR slot the descriptor selects holds the type, inner and outer alike.
            let slot = d >> 2 & 7;
            let mair = u64::from(if slot < 4 { MAIR0 } else { MAIR1 });
            assert_eq!(mair >> (8 * (slot % 4)) & 0xff, normal_policy(m).1, "{m:?}");
        }
    }
}

#[test]
fn both_formats_give_the_same_domain() {
    for m in normal_types() {
        for shareable in [false, true] {
            let a = attrs(m, shareable);
            let (n, s) = short_index_and_s(a);
            let Remapped::Normal { domain: short, .. } = remap(PRRR, NMRR, n, s) else {
                panic!("{m:?} is not Normal under PRRR");
            };
            let d = Desc::leaf(MapSize::Block2M, 0x4020_0000, a).raw();
            assert_eq!(short, sh_domain(d >> 8 & 3), "{m:?} shareable={shareable}");
        }
    }
}

#[test]
fn lpae_shareability_roundtrips() {
    let execs = [Execute::Never, Execute::Anywhere, Execute::UserOnly];
    for memory in MemoryType::ALL {
        for (shareable, execute) in [false, true]
            .into_iter()
            .flat_map(|s| execs.into_iter().map(move |e| (s, e)))
        {
            let a = Attributes {
                memory,
                access: Access::UserRo,
                execute,
                global: !shareable,
                shareable,
            };
            for (level, size) in [
                (1, MapSize::Block1G),
                (2, MapSize::Block2M),
                (3, MapSize::Page4K),
            ] {
                let d = Desc::leaf(size, 0x40_0000_0000, a);
                assert_eq!(
                    d.kind(level),
                    DescKind::Leaf {
                        size,
                        pa: 0x40_0000_0000,
                        attrs: a
                    }
                );
            }
        }
    }
    // An outer-shareable entry (written by someone else) still reads as shareable.
    let outer = Desc::leaf(
        MapSize::Page4K,
        0x1000,
        attrs(MemoryType::NormalWriteBack, false),
    )
    .raw()
        | 0b10 << 8;
    assert!(Desc::from_bits_retain(outer).attrs().shareable);
}

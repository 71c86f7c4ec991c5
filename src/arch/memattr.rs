//! The crate's eight memory-type slots, and the register values that describe them.
//!
//! Both descriptor formats name a mapping's memory type by an *attribute index*: `TEX[0]:C:B`
//! under TEX remap (short descriptors, `SCTLR.TRE = 1`), `AttrIndx` into `MAIR0`/`MAIR1`
//! (long descriptors). [`MemoryType::remap_index`] is that index, the same in both, and the
//! values here ([`PRRR`]/[`NMRR`], [`MAIR0`]/[`MAIR1`]) are what the MMU must hold for the
//! indexes to mean those types. The bring-up in `arch::mmu` and `arch::lpae` (ARM only) programs
//! them; the formats (`crate::short::attrs`, `crate::lpae::attrs`, which re-export them)
//! only encode the index into their bits.

/// The memory type of a mapping.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum MemoryType {
    /// Strongly-ordered: every access in program order, no gathering, always shareable.
    StronglyOrdered,
    /// Device memory (shareable).
    Device,
    /// Normal memory, inner and outer non-cacheable.
    NormalNonCacheable,
    /// Normal memory, inner and outer write-through, no write-allocate.
    NormalWriteThrough,
    /// Normal memory, inner and outer write-back, no write-allocate.
    NormalWriteBackNoAllocate,
    /// Normal memory, inner and outer write-back write-allocate (ordinary RAM).
    NormalWriteBack,
}

impl MemoryType {
    /// Every memory type, in declaration order.
    pub const ALL: [MemoryType; 6] = [
        MemoryType::StronglyOrdered,
        MemoryType::Device,
        MemoryType::NormalNonCacheable,
        MemoryType::NormalWriteThrough,
        MemoryType::NormalWriteBackNoAllocate,
        MemoryType::NormalWriteBack,
    ];

    /// The attribute index of this type: `TEX[0]:C:B` under TEX remap (short
    /// descriptors), `AttrIndx` into `MAIR0`/`MAIR1` (long descriptors).
    #[must_use]
    pub const fn remap_index(self) -> u8 {
        match self {
            MemoryType::StronglyOrdered => 0,
            MemoryType::Device => 1,
            MemoryType::NormalWriteThrough => 2,
            MemoryType::NormalWriteBackNoAllocate => 3,
            MemoryType::NormalNonCacheable => 4,
            MemoryType::NormalWriteBack => 7,
        }
    }

    /// The type an attribute index selects with this crate's remap and `MAIR` values
    /// (slots 5 and 6 are strongly-ordered).
    #[must_use]
    pub const fn from_remap_index(index: u8) -> Self {
        match index & 7 {
            1 => MemoryType::Device,
            2 => MemoryType::NormalWriteThrough,
            3 => MemoryType::NormalWriteBackNoAllocate,
            4 => MemoryType::NormalNonCacheable,
            7 => MemoryType::NormalWriteBack,
            _ => MemoryType::StronglyOrdered,
        }
    }

    /// Whether this is Normal memory (cacheability and shareability apply).
    #[must_use]
    pub const fn is_normal(self) -> bool {
        !matches!(self, MemoryType::StronglyOrdered | MemoryType::Device)
    }
}

/// `PRRR.TRn` value: 0 strongly-ordered, 1 device, 2 normal.
const fn prrr_tr(t: MemoryType) -> u32 {
    match t {
        MemoryType::StronglyOrdered => 0,
        MemoryType::Device => 1,
        _ => 2,
    }
}

/// `NMRR.IRn`/`ORn` value: 0 non-cacheable, 1 WB-WA, 2 WT, 3 WB no-WA.
const fn nmrr_policy(t: MemoryType) -> u32 {
    match t {
        MemoryType::NormalWriteBack => 1,
        MemoryType::NormalWriteThrough => 2,
        MemoryType::NormalWriteBackNoAllocate => 3,
        _ => 0,
    }
}

const fn compute_prrr() -> u32 {
    let mut v = 0;
    let mut i = 0;
    while i < 8 {
        let t = MemoryType::from_remap_index(i);
        v |= prrr_tr(t) << (2 * i as u32);
        // NOSn = 1 for the Normal slots: shareable normal memory is inner shareable, the
        // domain of the walks, barriers and TLB broadcasts. (NOSn of a Device or
        // strongly-ordered slot is ignored; the crate leaves it 0.)
        if t.is_normal() {
            v |= 1 << (24 + i as u32);
        }
        i += 1;
    }
    // DS0 = DS1 = 1: device is shareable whatever S says. NS0 = 0, NS1 = 1: normal memory
    // is shareable iff S.
    v | (1 << 16) | (1 << 17) | (1 << 19)
}

const fn compute_nmrr() -> u32 {
    let mut v = 0;
    let mut i = 0;
    while i < 8 {
        let p = nmrr_policy(MemoryType::from_remap_index(i));
        v |= (p << (2 * i as u32)) | (p << (16 + 2 * i as u32));
        i += 1;
    }
    v
}

/// The value the kernel must program in `PRRR` (Primary Region Remap Register) before
/// setting `SCTLR.TRE` for tables built by this crate (`0x9c0b_82a4`: `TRn` as the slots
/// above, `DS0 = DS1 = NS1 = 1`, `NOSn = 1` for the Normal slots 2, 3, 4 and 7).
///
/// Linux's ARMv7 value (`0xff0a_81a8`, `proc-v7-2level.S`) has the same `NOS` meaning
/// (shareable Normal memory is inner shareable) over different slots.
pub const PRRR: u32 = compute_prrr();
/// The value the kernel must program in `NMRR` (Normal Memory Remap Register) before
/// setting `SCTLR.TRE` (`0x40e0_40e0`).
pub const NMRR: u32 = compute_nmrr();

/// The `MAIR` attribute byte for a memory type (inner and outer the same).
const fn mair_byte(t: MemoryType) -> u32 {
    match t {
        MemoryType::StronglyOrdered => 0x00,
        MemoryType::Device => 0x04,
        MemoryType::NormalNonCacheable => 0x44,
        MemoryType::NormalWriteThrough => 0xaa,
        MemoryType::NormalWriteBackNoAllocate => 0xee,
        MemoryType::NormalWriteBack => 0xff,
    }
}

const fn mair(first_slot: u8) -> u32 {
    let mut v = 0;
    let mut i = 0;
    while i < 4 {
        v |= mair_byte(MemoryType::from_remap_index(first_slot + i)) << (8 * i as u32);
        i += 1;
    }
    v
}

/// The value the kernel must program in `MAIR0` (slots 0 to 3) for tables built by this
/// crate (`0xeeaa_0400`).
pub const MAIR0: u32 = mair(0);
/// The value the kernel must program in `MAIR1` (slots 4 to 7) (`0xff00_0044`).
pub const MAIR1: u32 = mair(4);

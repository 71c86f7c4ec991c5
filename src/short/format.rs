//! The short-descriptor [`Format`]: what the generic walker needs to know about L1/L2
//! entries, their sizes and the CPU features they depend on.

use super::descriptor::{L1Desc, L1Kind, L2Desc, L2Kind};
use crate::sink::MapSize;
use crate::table::attrs::{Access, Attributes, Execute};
use crate::table::error::Feature;
use crate::table::{Format, Kind, Layout, LeafShape, RootShape};

/// The VMSAv7 short-descriptor format (`TTBCR.EAE = 0`): level 1 with 1 MiB sections and
/// 16 MiB supersections, level 2 with 64 KiB large pages and 4 KiB small pages, 32-bit
/// entries, 1 KiB L2 tables packed four to a frame.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Short;

pub use crate::arch::features::short::Features;

const MIB: u64 = 1 << 20;
const TOP: u64 = 1 << 32;

impl crate::table::sealed::Sealed for Short {}

impl Format for Short {
    type Word = u32;
    type Features = Features;
    /// The PXN bit of the L1 entry of an L2 table (`None` for L1 entries, which have no
    /// table above them).
    type TableCtx = Option<bool>;

    const LAST_LEVEL: u8 = 2;
    const SHIFT: [u32; 4] = [0, 20, 12, 0];
    const ENTRIES: [usize; 4] = [0, 4096, 256, 0];
    const LEAVES: &'static [LeafShape] = &[
        LeafShape {
            size: MapSize::Super16M,
            level: 1,
            copies: 16,
        },
        LeafShape {
            size: MapSize::Section1M,
            level: 1,
            copies: 1,
        },
        LeafShape {
            size: MapSize::Large64K,
            level: 2,
            copies: 16,
        },
        LeafShape {
            size: MapSize::Page4K,
            level: 2,
            copies: 1,
        },
    ];
    const VALID_MASK: u64 = 3;
    const TABLE_PA_LIMIT: u64 = TOP;
    const ROOT_CTX: Option<bool> = None;

    fn root(layout: Layout) -> RootShape {
        match layout {
            // (The `T1SZ` layouts are refused by `layout_usable`; they get the whole shape.)
            Layout::Whole
            | Layout::Kernel { .. }
            | Layout::UserLow { .. }
            | Layout::KernelHigh { .. } => RootShape {
                level: 1,
                entries: 4096,
                frames: 4,
                align: 16384,
            },
            Layout::User { n } => {
                let bytes = 16384usize >> n;
                RootShape {
                    level: 1,
                    entries: 4096 >> n,
                    frames: bytes.div_ceil(4096),
                    align: bytes.max(4096),
                }
            }
        }
    }

    fn layout_usable(layout: Layout) -> bool {
        !matches!(layout, Layout::UserLow { .. } | Layout::KernelHigh { .. })
    }

    #[inline(always)]
    fn coherent_walk(features: &Features) -> bool {
        features.coherent_walk
    }

    fn size_usable(features: &Features, size: MapSize) -> bool {
        size != MapSize::Super16M || features.supersections
    }

    fn pa_limit(features: &Features, size: MapSize) -> u64 {
        if size == MapSize::Super16M && features.pa40 {
            1 << 40
        } else {
            TOP
        }
    }

    fn check_permissions(features: &Features, _: Access, execute: Execute) -> Result<(), Feature> {
        if execute == Execute::UserOnly && !features.pxn {
            Err(Feature::Pxn)
        } else {
            Ok(())
        }
    }

    /// PXN for user-only code, none for code the kernel runs; for never-executable
    /// leaves PXN wherever the CPU has it and the table is a process's or the leaf is
    /// user-accessible (so a later user-only executable page in the same MiB fits, and the
    /// kernel never runs from user-reachable memory), none for kernel-only data of a
    /// kernel or whole-space table (where kernel code may follow).
    fn new_table_ctx(layout: Layout, features: &Features, attrs: Attributes) -> Option<bool> {
        let user = attrs.access.allows(true, false);
        Some(match attrs.execute {
            Execute::UserOnly => true,
            Execute::Anywhere => false,
            Execute::Never => (layout.is_user() || user) && features.pxn,
        })
    }

    fn table_allows(ctx: Option<bool>, execute: Execute) -> bool {
        match (ctx, execute) {
            (Some(pxn), Execute::UserOnly) => pxn,
            (Some(pxn), Execute::Anywhere) => !pxn,
            _ => true,
        }
    }

    #[inline(always)]
    fn kind(features: &Features, level: u8, raw: u32) -> Kind {
        if level == 1 {
            match raw & 3 {
                0 => Kind::Invalid,
                1 => Kind::Table,
                3 if !features.pxn => Kind::Invalid,
                _ if raw & L1Desc::SUPER.bits() != 0 => Kind::Leaf(MapSize::Super16M),
                _ => Kind::Leaf(MapSize::Section1M),
            }
        } else {
            match raw & 3 {
                0 => Kind::Invalid,
                1 => Kind::Leaf(MapSize::Large64K),
                _ => Kind::Leaf(MapSize::Page4K),
            }
        }
    }

    #[inline(always)]
    fn table_pa(raw: u32) -> u64 {
        u64::from(raw & 0xffff_fc00)
    }

    #[inline(always)]
    fn table_ctx(raw: u32) -> Option<bool> {
        Some(raw & L1Desc::TABLE_PXN.bits() != 0)
    }

    #[inline(always)]
    fn leaf_pa(raw: u32, size: MapSize) -> u64 {
        match size {
            MapSize::Super16M => L1Desc::supersection_pa(raw),
            MapSize::Section1M => u64::from(raw & 0xfff0_0000),
            MapSize::Large64K => u64::from(raw & 0xffff_0000),
            _ => u64::from(raw & 0xffff_f000),
        }
    }

    #[inline(always)]
    fn leaf_global(raw: u32, size: MapSize) -> bool {
        let ng = if size >= MapSize::Section1M {
            L1Desc::NG.bits()
        } else {
            L2Desc::NG.bits()
        };
        raw & ng == 0
    }

    #[inline(always)]
    fn leaf_executable(raw: u32, size: MapSize) -> bool {
        let xn = match size {
            MapSize::Page4K => L2Desc::TYPE0.bits(),
            MapSize::Large64K => L2Desc::LARGE_XN.bits(),
            _ => L1Desc::XN.bits(),
        };
        raw & xn == 0
    }

    #[inline]
    fn leaf_attrs(raw: u32, size: MapSize, ctx: Option<bool>) -> Attributes {
        if size >= MapSize::Section1M {
            match L1Desc::from_bits_retain(raw).kind(true) {
                L1Kind::Section { attrs, .. } | L1Kind::Supersection { attrs, .. } => attrs,
                // Not reached: the walker only asks about leaves.
                _ => Attributes::KERNEL_DATA,
            }
        } else {
            match L2Desc::from_bits_retain(raw).kind(ctx.unwrap_or(false)) {
                L2Kind::Small { attrs, .. } | L2Kind::Large { attrs, .. } => attrs,
                L2Kind::Fault => Attributes::KERNEL_DATA,
            }
        }
    }

    #[inline(always)]
    fn leaf_access(raw: u32, size: MapSize) -> Access {
        // AP[1:0] and AP[2]: bits 11:10 and 15 in a section, 5:4 and 9 in a page.
        let ap = if size >= MapSize::Section1M {
            ((raw >> 10) & 3) | ((raw >> 13) & 4)
        } else {
            ((raw >> 4) & 3) | ((raw >> 7) & 4)
        };
        Access::from_ap(ap as u8)
    }

    fn encode_table(pa: u64, ctx: Option<bool>) -> u32 {
        L1Desc::table(pa as u32, ctx.unwrap_or(false)).raw()
    }

    fn encode_leaf(size: MapSize, pa: u64, attrs: Attributes) -> u32 {
        match size {
            MapSize::Super16M => L1Desc::supersection(pa, attrs).raw(),
            MapSize::Section1M => L1Desc::section(pa as u32, attrs).raw(),
            MapSize::Large64K => L2Desc::large(pa as u32, attrs).raw(),
            _ => L2Desc::small(pa as u32, attrs).raw(),
        }
    }

    #[inline(always)]
    fn pa_field(size: MapSize, pa: u64) -> u32 {
        match size {
            MapSize::Super16M => L1Desc::supersection_base(pa),
            MapSize::Section1M => pa as u32 & 0xfff0_0000,
            MapSize::Large64K => pa as u32 & 0xffff_0000,
            _ => pa as u32 & 0xffff_f000,
        }
    }
}

const _: () = assert!(Short::ENTRIES[2] * 4 * 4 == 4096 && MIB == 1 << Short::SHIFT[1]);

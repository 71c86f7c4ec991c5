//! Host tests of the short-descriptor format: encodings through the walker, sizes,
//! packing and memory numbers, PXN per table, layouts. The property test against a
//! reference model and the failure injection run over both formats in `table::tests`.

use std::vec::Vec;

use super::*;
use crate::addr::{PhysAddr, VirtAddr, VirtRange};
use crate::sink::MapSize;
use crate::table::error::{FreeTablesError, MapError, ProtectError, UnmapError};
use crate::table::tests::{all, map_pages, r, sizes, teardown, Rec, KIB, MIB};

use super::host::HostMemory;

fn whole(mem: &HostMemory) -> AddressSpace<HostMemory> {
    crate::table::tests::whole::<Short>(mem)
}

#[test]
fn dense_table_memory_numbers() {
    // One 4 KiB frame per 4 MiB: 1 GiB costs 1 MiB of L2 tables, below the 16 KiB L1.
    crate::table::tests::dense_pages::<Short>(&[(1 << 30, 256), (256 * MIB, 64)], 4);
}

#[test]
fn picks_largest_size_alignment_allows() {
    let mem = HostMemory::new();
    let mut s = whole(&mem);
    // 16 MiB-aligned VA and PA, 17 MiB + 64 KiB + 4 KiB long.
    let len = 16 * MIB + MIB + 64 * KIB + 4 * KIB;
    s.map(
        r(0x1000_0000, len),
        PhysAddr::new(0x6000_0000),
        Attributes::KERNEL_DATA,
        MapSize::Super16M,
    )
    .unwrap();
    assert_eq!(
        sizes(&s, all()),
        [
            (0x1000_0000, MapSize::Super16M),
            (0x1100_0000, MapSize::Section1M),
            (0x1110_0000, MapSize::Large64K),
            (0x1111_0000, MapSize::Page4K),
        ]
    );
    // Same with max 64 KiB: 273 large pages + 1 page.
    let mut rec = Rec::default();
    s.unmap(r(0x1000_0000, len), &mut rec).unwrap();
    assert_eq!(rec.leaves.len(), 4, "one report per mapping");
    assert_eq!(rec.leaves[0].size, MapSize::Super16M);
    s.map(
        r(0x1000_0000, len),
        PhysAddr::new(0x6000_0000),
        Attributes::KERNEL_DATA,
        MapSize::Large64K,
    )
    .unwrap();
    let v = sizes(&s, all());
    assert_eq!(v.len(), 274);
    assert!(v[..273].iter().all(|&(_, z)| z == MapSize::Large64K));
    teardown(s, &mem);
    // PA only 4 KiB aligned relative to VA: small pages only.
    let mem2 = HostMemory::new();
    let mut s2 = whole(&mem2);
    s2.map(
        r(0x2000_0000, 2 * MIB),
        PhysAddr::new(0x6000_1000),
        Attributes::KERNEL_DATA,
        MapSize::Super16M,
    )
    .unwrap();
    let v = sizes(&s2, all());
    assert_eq!(v.len(), 512);
    assert!(v.iter().all(|&(_, z)| z == MapSize::Page4K));
    teardown(s2, &mem2);
}

#[test]
fn section_not_written_over_a_table() {
    let mem = HostMemory::new();
    let mut s = whole(&mem);
    let mut rec = Rec::default();
    s.map(
        r(0x3000_0000, 4096),
        PhysAddr::new(0x1000),
        Attributes::KERNEL_DATA,
        MapSize::Page4K,
    )
    .unwrap();
    s.unmap(r(0x3000_0000, 4096), &mut rec).unwrap();
    // The region now has an empty table: a section-sized map uses pages there.
    s.map(
        r(0x3000_0000, 2 * MIB),
        PhysAddr::new(0x10_0000),
        Attributes::KERNEL_DATA,
        MapSize::Section1M,
    )
    .unwrap();
    let v = sizes(&s, all());
    assert_eq!(v.len(), 16 + 1);
    assert_eq!(v[0], (0x3000_0000, MapSize::Large64K));
    assert_eq!(v[16], (0x3010_0000, MapSize::Section1M));
    assert_eq!(s.table_frames(), 1);
    let mut m = s.destroy(&mut rec);
    rec.flush(&mut m);
    assert_eq!(mem.outstanding(), 0);
}

#[test]
fn translate_reports_pa_size_attrs() {
    let mem = HostMemory::new();
    let mut s = whole(&mem);
    let attrs = Attributes {
        memory: MemoryType::NormalWriteThrough,
        access: Access::UserRo,
        execute: Execute::UserOnly,
        global: false,
        shareable: false,
    };
    s.map(
        r(0x5000_0000, 64 * KIB),
        PhysAddr::new(0x7777_0000),
        attrs,
        MapSize::Super16M,
    )
    .unwrap();
    let t = s.translate(VirtAddr::new(0x5000_1234)).unwrap();
    assert_eq!(t.pa, PhysAddr::new(0x7777_1234));
    assert_eq!(t.mapping.size, MapSize::Large64K);
    assert_eq!(t.mapping.va, VirtAddr::new(0x5000_0000));
    assert_eq!(t.mapping.attrs, attrs);
    assert!(s.translate(VirtAddr::new(0x5001_0000)).is_none());
    assert!(s.translate(VirtAddr::new(0x4fff_ffff)).is_none());
    // 40-bit supersection.
    s.map(
        r(0x6000_0000, 16 * MIB),
        PhysAddr::new(0xab_0000_0000),
        Attributes::KERNEL_DATA,
        MapSize::Super16M,
    )
    .unwrap();
    let t = s.translate(VirtAddr::new(0x60ab_cdef)).unwrap();
    assert_eq!(t.pa, PhysAddr::new(0xab_00ab_cdef));
    assert_eq!(t.mapping.size, MapSize::Super16M);
    teardown(s, &mem);
}

#[test]
fn map_refusals_change_nothing() {
    let mem = HostMemory::new();
    let mut s = AddressSpace::new(mem.clone(), Layout::Whole, Features::BASELINE).unwrap();
    s.map(
        r(0x1000_0000, 8 * KIB),
        PhysAddr::new(0x1000),
        Attributes::KERNEL_DATA,
        MapSize::Page4K,
    )
    .unwrap();
    s.map(
        r(0x2000_0000, MIB),
        PhysAddr::new(0x10_0000),
        Attributes::KERNEL_DATA,
        MapSize::Section1M,
    )
    .unwrap();
    let before = s.snapshot();
    let out = mem.outstanding();
    let cases: [(VirtRange, u64, Attributes, MapError); 7] = [
        (
            r(0x0fff_0000, 128 * KIB),
            0x40_0000,
            Attributes::KERNEL_DATA,
            MapError::AlreadyMapped(VirtAddr::new(0x1000_0000)),
        ),
        (
            r(0x2008_0000, 4 * KIB),
            0x40_0000,
            Attributes::KERNEL_DATA,
            MapError::AlreadyMapped(VirtAddr::new(0x2008_0000)),
        ),
        (
            r(0x3000_0000, 4 * KIB),
            0x40_0800,
            Attributes::KERNEL_DATA,
            MapError::Misaligned(PhysAddr::new(0x40_0800)),
        ),
        (
            r(0x3000_0000, 4 * KIB),
            1 << 32,
            Attributes::KERNEL_DATA,
            MapError::PhysUnreachable(PhysAddr::new(1 << 32)),
        ),
        (
            r(0x3000_0000, 16 * MIB),
            1 << 32,
            Attributes::KERNEL_DATA,
            // No pa40 in the baseline.
            MapError::PhysUnreachable(PhysAddr::new(1 << 32)),
        ),
        (
            r(0x3000_0000, 8 * KIB),
            0xffff_f000,
            Attributes::KERNEL_DATA,
            MapError::PhysUnreachable(PhysAddr::new(0xffff_f000 + 4096)),
        ),
        (
            r(0x3000_0000, 4 * KIB),
            0x40_0000,
            Attributes {
                execute: Execute::UserOnly,
                ..Attributes::USER_DATA
            },
            MapError::Unsupported(crate::table::error::Feature::Pxn),
        ),
    ];
    for (range, pa, attrs, want) in cases {
        let got = s.map(range, PhysAddr::new(pa), attrs, MapSize::Super16M);
        assert_eq!(got, Err(want), "{range:?} -> {pa:#x}");
        assert_eq!(s.snapshot(), before);
        assert_eq!(mem.outstanding(), out);
    }
    teardown(s, &mem);
}

#[test]
fn pxn_is_per_table_for_pages() {
    let mem = HostMemory::new();
    let mut s = whole(&mem);
    let user_code = Attributes {
        execute: Execute::UserOnly,
        ..Attributes::USER_DATA
    };
    s.map(
        r(0x1000_0000, 4096),
        PhysAddr::new(0x1000),
        user_code,
        MapSize::Page4K,
    )
    .unwrap();
    // Kernel-executable page in the same 1 MiB region: the table has PXN.
    let got = s.map(
        r(0x1000_1000, 4096),
        PhysAddr::new(0x2000),
        Attributes::KERNEL_IMAGE,
        MapSize::Page4K,
    );
    assert_eq!(got, Err(MapError::PxnConflict(VirtAddr::new(0x1000_1000))));
    // Never-executable data is fine in either kind of table.
    s.map(
        r(0x1000_1000, 4096),
        PhysAddr::new(0x2000),
        Attributes::USER_DATA,
        MapSize::Page4K,
    )
    .unwrap();
    let t = s.translate(VirtAddr::new(0x1000_0000)).unwrap();
    assert_eq!(t.mapping.attrs.execute, Execute::UserOnly);
    // protect to Anywhere conflicts, to Never is fine.
    assert_eq!(
        s.protect(
            r(0x1000_0000, 4096),
            Access::UserRo,
            Execute::Anywhere,
            &mut Rec::default()
        ),
        Err(ProtectError::PxnConflict(VirtAddr::new(0x1000_0000)))
    );
    let c = s
        .protect(
            r(0x1000_0000, 8192),
            Access::UserRo,
            Execute::Never,
            &mut Rec::default(),
        )
        .unwrap()
        .unwrap();
    assert_eq!(c.leaves, 2);
    assert!(c.executable && !c.global);
    // Sections carry their own PXN.
    s.map(
        r(0x2000_0000, MIB),
        PhysAddr::new(0x10_0000),
        user_code,
        MapSize::Section1M,
    )
    .unwrap();
    assert_eq!(
        s.translate(VirtAddr::new(0x2000_0000))
            .unwrap()
            .mapping
            .attrs
            .execute,
        Execute::UserOnly
    );
    teardown(s, &mem);
}

#[test]
fn unmap_partial_block_refused_before_anything() {
    let mem = HostMemory::new();
    let mut s = whole(&mem);
    s.map(
        r(0x1000_0000, 4096),
        PhysAddr::new(0x1000),
        Attributes::KERNEL_DATA,
        MapSize::Page4K,
    )
    .unwrap();
    s.map(
        r(0x1100_0000, 16 * MIB),
        PhysAddr::new(0x0100_0000),
        Attributes::KERNEL_DATA,
        MapSize::Super16M,
    )
    .unwrap();
    s.map(
        r(0x2000_0000, 64 * KIB),
        PhysAddr::new(0x0001_0000),
        Attributes::KERNEL_DATA,
        MapSize::Large64K,
    )
    .unwrap();
    let before = s.snapshot();
    let mut rec = Rec::default();
    // The page at 0x1000_0000 would be cleared first if the check came late.
    assert_eq!(
        s.unmap(r(0x1000_0000, 0x100_0000 + MIB), &mut rec),
        Err(UnmapError::PartialBlock {
            va: VirtAddr::new(0x1100_0000),
            size: MapSize::Super16M
        })
    );
    assert_eq!(
        s.unmap(r(0x2000_8000, 4096), &mut rec),
        Err(UnmapError::PartialBlock {
            va: VirtAddr::new(0x2000_0000),
            size: MapSize::Large64K
        })
    );
    assert_eq!(
        s.protect(
            r(0x1180_0000, MIB),
            Access::KernelRo,
            Execute::Never,
            &mut Rec::default()
        ),
        Err(ProtectError::PartialBlock {
            va: VirtAddr::new(0x1100_0000),
            size: MapSize::Super16M
        })
    );
    assert!(rec.leaves.is_empty());
    assert_eq!(s.snapshot(), before);
    // Whole blocks go, one report each.
    assert_eq!(
        s.unmap(r(0x1000_0000, 0x1000_0000 + 0x1000_0000), &mut rec),
        Ok(3)
    );
    assert_eq!(
        rec.leaves
            .iter()
            .map(|l| (l.va.as_u32(), l.size, l.pa.as_u64()))
            .collect::<Vec<_>>(),
        [
            (0x1000_0000, MapSize::Page4K, 0x1000),
            (0x1100_0000, MapSize::Super16M, 0x0100_0000),
            (0x2000_0000, MapSize::Large64K, 0x1_0000),
        ]
    );
    assert!(rec.leaves.iter().all(|l| l.global && !l.executable));
    assert_eq!(s.mappings(all()).count(), 0);
    rec.flush(&mut mem.clone());
    teardown(s, &mem);
}

#[test]
fn walk_reads_one_entry_per_empty_region() {
    // One read per L1 entry, plus one when the walk resumes after the leaf; the L2 table
    // once.
    assert_eq!(
        crate::table::tests::walk_counts::<Short>(),
        (4096 + 1, 256, 0)
    );
}

#[test]
fn free_tables_follows_group_floor_ceiling() {
    let mem = HostMemory::new();
    let mut s = whole(&mem);
    let mut rec = Rec::default();
    // Pages in regions 0x100 and 0x102 (group 0x40) and 0x104 (group 0x41).
    map_pages(&mut s, &[0x1000_0000, 0x1020_0000, 0x1040_0000]);
    assert_eq!(s.table_frames(), 2);
    // Non-empty: nothing freed.
    assert_eq!(s.free_tables(all(), VirtRange::ALL, &mut rec), Ok(0));
    s.unmap(r(0x1000_0000, 8 * MIB), &mut rec).unwrap();
    // Group 0x40 is [0x1000_0000, 0x1040_0000): a ceiling inside it keeps it.
    assert_eq!(
        s.free_tables(
            r(0x1000_0000, MIB),
            VirtRange::floor_ceiling(VirtAddr::new(0x1000_0000), 0x1030_0000),
            &mut rec
        ),
        Ok(0)
    );
    // A floor inside it keeps it too.
    assert_eq!(
        s.free_tables(
            r(0x1020_0000, MIB),
            VirtRange::floor_ceiling(VirtAddr::new(0x1010_0000), 0x1100_0000),
            &mut rec
        ),
        Ok(0)
    );
    // Range touching only group 0x40 frees only it, with both linked regions reported.
    assert_eq!(
        s.free_tables(
            r(0x1020_0000, 4096),
            VirtRange::floor_ceiling(VirtAddr::new(0x1000_0000), 0x1100_0000),
            &mut rec
        ),
        Ok(1)
    );
    assert_eq!(
        rec.unlinked,
        [
            (VirtAddr::new(0x1000_0000), MIB, true),
            (VirtAddr::new(0x1020_0000), MIB, true)
        ]
    );
    assert_eq!(rec.freed.len(), 1);
    assert_eq!(s.table_frames(), 1);
    assert!(
        mem.is_allocated(rec.freed[0].0),
        "freed directly, not via the sink"
    );
    assert_eq!(
        s.free_tables(
            r(0x1000_0000, MIB),
            VirtRange::floor_ceiling(VirtAddr::new(0x1000_1000), 1 << 32),
            &mut rec
        ),
        Err(FreeTablesError::BadBounds)
    );
    rec.flush(&mut mem.clone());
    teardown(s, &mem);
}

#[test]
fn user_and_kernel_layouts() {
    // User roots are `16 KiB >> n` (at least a frame), kernel roots the full 16 KiB.
    crate::table::tests::layouts::<Short>(
        |n| {
            let bytes = 16384usize >> n;
            (bytes.div_ceil(4096), bytes.max(4096) as u64, 1)
        },
        (4, 16384),
        MapSize::Section1M,
    );
}

#[test]
fn user_tables_get_pxn_by_default() {
    let mem = HostMemory::new();
    let mut u = AddressSpace::new(mem.clone(), Layout::User { n: 1 }, Features::ALL).unwrap();
    u.map(
        r(0x10000, 4096),
        PhysAddr::new(0x1000),
        Attributes::USER_DATA,
        MapSize::Page4K,
    )
    .unwrap();
    // A later user-code page in the same table keeps working; kernel-executable does not.
    u.map(
        r(0x11000, 4096),
        PhysAddr::new(0x2000),
        Attributes {
            execute: Execute::UserOnly,
            ..Attributes::USER_DATA
        },
        MapSize::Page4K,
    )
    .unwrap();
    let kernel_code = Attributes {
        global: false,
        ..Attributes::KERNEL_IMAGE
    };
    assert!(matches!(
        u.map(
            r(0x12000, 4096),
            PhysAddr::new(0x3000),
            kernel_code,
            MapSize::Page4K
        ),
        Err(MapError::PxnConflict(_))
    ));
    teardown(u, &mem);
}

#[test]
fn features_from_id_registers() {
    // QEMU's Cortex-A15 and Cortex-A7 values.
    assert_eq!(
        Features::from_id_regs(0x1020_1105, 0x0210_2211),
        Features::ALL
    );
    assert_eq!(
        Features::from_id_regs(0x1010_1105, 0x0210_2211),
        Features::ALL
    );
    // A VMSAv7 CPU without PXN, non-coherent walks, no supersections.
    let f = Features::from_id_regs(0x0000_0003, 0xf000_0000);
    assert!(!f.pxn && !f.supersections && !f.pa40 && !f.coherent_walk);
}

#[test]
fn non_coherent_walk_features_still_work_on_host() {
    let mem = HostMemory::new();
    let features = Features {
        supersections: true,
        ..Features::BASELINE
    };
    let mut s = AddressSpace::new(mem.clone(), Layout::Whole, features).unwrap();
    s.map(
        r(0x1000_0000, 16 * MIB),
        PhysAddr::new(0x2000_0000),
        Attributes::KERNEL_DATA,
        MapSize::Super16M,
    )
    .unwrap();
    assert_eq!(sizes(&s, all()), [(0x1000_0000, MapSize::Super16M)]);
    teardown(s, &mem);
}

#[cfg(feature = "tlb-model")]
#[test]
fn walk_source_reads_tables_as_they_are_now() {
    use crate::tlb::model::WalkSource;
    let mem = HostMemory::new();
    let mut s = whole(&mem);
    s.map(
        r(0x1000_0000, 64 * KIB),
        PhysAddr::new(0x5000_0000),
        Attributes::USER_DATA,
        MapSize::Large64K,
    )
    .unwrap();
    s.map(
        r(0x2000_0000, 16 * MIB),
        PhysAddr::new(0x6000_0000),
        Attributes::KERNEL_DATA,
        MapSize::Super16M,
    )
    .unwrap();
    let w = s.walk(VirtAddr::new(0x1000_3000));
    let t = w.tables[0].unwrap();
    assert_eq!(
        (t.level, t.span_va, t.span),
        (1, VirtAddr::new(0x1000_0000), MIB)
    );
    let leaf = w.leaf.unwrap();
    assert_eq!(leaf.va, VirtAddr::new(0x1000_0000));
    assert_eq!(leaf.size, MapSize::Large64K);
    assert_eq!(leaf.pa, PhysAddr::new(0x5000_0000));
    assert!(!leaf.global);
    let w2 = s.walk(VirtAddr::new(0x2012_3456));
    assert!(w2.tables[0].is_none());
    assert_eq!(w2.leaf.unwrap().size, MapSize::Super16M);
    assert!(w2.leaf.unwrap().global);
    // Unmap and free the table: a cached walk through the old table reads what is there now.
    let mut rec = Rec::default();
    s.unmap(r(0x1000_0000, 64 * KIB), &mut rec).unwrap();
    assert!(s.walk(VirtAddr::new(0x1000_3000)).leaf.is_none());
    assert!(s
        .walk_from(1, t.table, VirtAddr::new(0x1000_3000))
        .leaf
        .is_none());
    s.free_tables(all(), VirtRange::ALL, &mut rec).unwrap();
    assert_eq!(rec.freed, [(PhysAddr::new(t.table.as_u64() & !0xfff), 1)]);
    assert!(s.walk(VirtAddr::new(0x1000_3000)).tables[0].is_none());
    let mut m = mem.clone();
    rec.flush(&mut m);
    // Freed memory is poisoned; walking through it must not panic.
    let _ = s.walk_from(1, t.table, VirtAddr::new(0x1000_3000));
    teardown(s, &mem);
}

#[test]
fn whole_space_tables_of_user_pages_get_pxn() {
    // Issue 17: in a `Whole` layout, user data created its L2 table without PXN, so a
    // later user-only executable page in the same MiB was refused. Now the table's PXN
    // follows the access: user-reachable pages get PXN, kernel-only data does not.
    let mem = HostMemory::new();
    let mut s = whole(&mem);
    s.map(
        r(0x1000_0000, 4096),
        PhysAddr::new(0x1000),
        Attributes::USER_DATA,
        MapSize::Page4K,
    )
    .unwrap();
    let user_code = Attributes {
        execute: Execute::UserOnly,
        ..Attributes::USER_DATA
    };
    s.map(
        r(0x1000_1000, 4096),
        PhysAddr::new(0x2000),
        user_code,
        MapSize::Page4K,
    )
    .unwrap();
    // The kernel cannot execute there (the safe default).
    assert_eq!(
        s.map(
            r(0x1000_2000, 4096),
            PhysAddr::new(0x3000),
            Attributes::KERNEL_IMAGE,
            MapSize::Page4K
        ),
        Err(MapError::PxnConflict(VirtAddr::new(0x1000_2000)))
    );
    // Kernel-only data leaves the table without PXN: kernel code may follow.
    s.map(
        r(0x2000_0000, 4096),
        PhysAddr::new(0x4000),
        Attributes::KERNEL_DATA,
        MapSize::Page4K,
    )
    .unwrap();
    s.map(
        r(0x2000_1000, 4096),
        PhysAddr::new(0x5000),
        Attributes::KERNEL_IMAGE,
        MapSize::Page4K,
    )
    .unwrap();
    teardown(s, &mem);
    // Without PXN on the CPU nothing changes (no PXN bit to set).
    let mem = HostMemory::new();
    let mut b = AddressSpace::new(mem.clone(), Layout::Whole, Features::BASELINE).unwrap();
    b.map(
        r(0x1000_0000, 4096),
        PhysAddr::new(0x1000),
        Attributes::USER_DATA,
        MapSize::Page4K,
    )
    .unwrap();
    b.map(
        r(0x1000_1000, 4096),
        PhysAddr::new(0x2000),
        Attributes::KERNEL_IMAGE,
        MapSize::Page4K,
    )
    .unwrap();
    teardown(b, &mem);
}

#[test]
fn without_supersections_a_16_mib_map_falls_back_to_sections() {
    // `ID_MMFR3.Supersec = 0xf`: no supersections. `Super16M` is a maximum, so `map`
    // uses sections (it never writes a supersection descriptor the CPU would take as
    // reserved); the baseline does not claim them.
    let f = Features::from_id_regs(0x1020_1105, 0xf210_2211);
    assert!(!f.supersections && !f.pa40 && f.pxn);
    const { assert!(!Features::BASELINE.supersections) };
    for features in [f, Features::BASELINE] {
        let mem = HostMemory::new();
        let mut s = AddressSpace::new(mem.clone(), Layout::Whole, features).unwrap();
        s.map(
            r(0x1000_0000, 16 * MIB),
            PhysAddr::new(0x6000_0000),
            Attributes::KERNEL_DATA,
            MapSize::Super16M,
        )
        .unwrap();
        assert!(sizes(&s, all())
            .iter()
            .all(|&(_, z)| z == MapSize::Section1M));
        teardown(s, &mem);
    }
}

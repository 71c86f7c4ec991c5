//! Host tests of the short-descriptor address space: unit tests, memory numbers,
//! allocation-failure injection at every N, and a property test against a reference
//! model with frame accounting.

use std::collections::BTreeMap;
use std::vec::Vec;

use proptest::prelude::*;

use super::host::HostMemory;
use super::*;
use crate::addr::{PhysAddr, VirtAddr, VirtRange};
use crate::error::{FreeTablesError, MapError, ProtectError, UnmapError};
use crate::memory::Memory;
use crate::sink::{ClearedLeaf, MapSize, UnmapSink};

const MIB: u64 = 1 << 20;
const KIB: u64 = 1 << 10;

/// Records what the walkers report; `flush` plays the gather: frees table memory after
/// the (imaginary) TLB flush.
#[derive(Default, Debug)]
struct Rec {
    leaves: Vec<ClearedLeaf>,
    unlinked: Vec<(VirtAddr, u64, bool)>,
    freed: Vec<(PhysAddr, usize)>,
}

impl UnmapSink for Rec {
    fn leaf_cleared(&mut self, leaf: ClearedLeaf) {
        self.leaves.push(leaf);
    }
    fn table_unlinked(&mut self, va: VirtAddr, span: u64, global: bool) {
        self.unlinked.push((va, span, global));
    }
    fn table_memory_freed(&mut self, pa: PhysAddr, frames: usize) {
        self.freed.push((pa, frames));
    }
}

impl Rec {
    fn flush(&mut self, mem: &mut HostMemory) {
        for (pa, n) in self.freed.drain(..) {
            mem.free_frames(pa, n);
        }
        self.leaves.clear();
        self.unlinked.clear();
    }
}

fn r(start: u64, len: u64) -> VirtRange {
    VirtRange::from_start_len(VirtAddr::new(start as u32), len).unwrap()
}

fn whole(mem: &HostMemory) -> AddressSpace<HostMemory> {
    AddressSpace::new(mem.clone(), Layout::Whole, Features::ALL).unwrap()
}

fn all() -> VirtRange {
    r(0, 1 << 32)
}

fn teardown(space: AddressSpace<HostMemory>, mem: &HostMemory) {
    let mut rec = Rec::default();
    let mut m = space.destroy(&mut rec);
    rec.flush(&mut m);
    assert_eq!(mem.outstanding(), 0, "frames leaked");
}

fn sizes(space: &AddressSpace<HostMemory>, range: VirtRange) -> Vec<(u64, MapSize)> {
    space
        .mappings(range)
        .map(|m| (m.va.as_u64(), m.size))
        .collect()
}

#[test]
fn dense_table_memory_numbers() {
    for (len, frames) in [(1u64 << 30, 256usize), (256 * MIB, 64)] {
        let mem = HostMemory::new();
        let mut s = whole(&mem);
        s.map(
            r(0x4000_0000, len),
            PhysAddr::new(0x8000_0000),
            Attributes::KERNEL_DATA,
            MapSize::Page4K,
        )
        .unwrap();
        assert_eq!(s.table_frames(), frames);
        assert_eq!(s.table_bytes(), frames as u64 * 4096 + 16 * KIB);
        assert_eq!(mem.outstanding(), frames + 4);
        std::println!(
            "dense {} MiB of 4 KiB pages: {} KiB of L2 tables + 16 KiB L1",
            len >> 20,
            frames * 4
        );
        assert_eq!(s.mappings(all()).count() as u64, len / 4096);
        teardown(s, &mem);
    }
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
    let l1 = s.l1_words();
    let l2 = s.l2_words();
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
            MapError::Unsupported(crate::error::Feature::Pxn),
        ),
    ];
    for (range, pa, attrs, want) in cases {
        let got = s.map(range, PhysAddr::new(pa), attrs, MapSize::Super16M);
        assert_eq!(got, Err(want), "{range:?} -> {pa:#x}");
        assert_eq!(s.l1_words(), l1);
        assert_eq!(s.l2_words(), l2);
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
        s.protect(r(0x1000_0000, 4096), Access::UserRo, Execute::Anywhere),
        Err(ProtectError::PxnConflict(VirtAddr::new(0x1000_0000)))
    );
    let c = s
        .protect(r(0x1000_0000, 8192), Access::UserRo, Execute::Never)
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
    let l1 = s.l1_words();
    let l2 = s.l2_words();
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
        s.protect(r(0x1180_0000, MIB), Access::KernelRo, Execute::Never),
        Err(ProtectError::PartialBlock {
            va: VirtAddr::new(0x1100_0000),
            size: MapSize::Super16M
        })
    );
    assert!(rec.leaves.is_empty());
    assert_eq!(s.l1_words(), l1);
    assert_eq!(s.l2_words(), l2);
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
    let mem = HostMemory::new();
    let mut s = whole(&mem);
    s.map(
        r(0x8000_0000, 4096),
        PhysAddr::new(0x1000),
        Attributes::KERNEL_DATA,
        MapSize::Page4K,
    )
    .unwrap();
    let mut it = s.mappings(all());
    assert_eq!(it.by_ref().count(), 1);
    let c = it.counts();
    // One read per L1 entry, plus one when the walk resumes after the leaf.
    assert_eq!(c.l1_reads, 4096 + 1);
    assert_eq!(c.l2_reads, 256);
    teardown(s, &mem);
}

#[test]
fn free_tables_follows_group_floor_ceiling() {
    let mem = HostMemory::new();
    let mut s = whole(&mem);
    let mut rec = Rec::default();
    // Pages in regions 0x100 and 0x102 (group 0x40) and 0x104 (group 0x41).
    for va in [0x1000_0000u64, 0x1020_0000, 0x1040_0000] {
        s.map(
            r(va, 4096),
            PhysAddr::new(0x1000),
            Attributes::KERNEL_DATA,
            MapSize::Page4K,
        )
        .unwrap();
    }
    assert_eq!(s.table_frames(), 2);
    // Non-empty: nothing freed.
    assert_eq!(
        s.free_tables(all(), VirtAddr::new(0), 1 << 32, &mut rec),
        Ok(0)
    );
    s.unmap(r(0x1000_0000, 8 * MIB), &mut rec).unwrap();
    // Group 0x40 is [0x1000_0000, 0x1040_0000): a ceiling inside it keeps it.
    assert_eq!(
        s.free_tables(
            r(0x1000_0000, MIB),
            VirtAddr::new(0x1000_0000),
            0x1030_0000,
            &mut rec
        ),
        Ok(0)
    );
    // A floor inside it keeps it too.
    assert_eq!(
        s.free_tables(
            r(0x1020_0000, MIB),
            VirtAddr::new(0x1010_0000),
            0x1100_0000,
            &mut rec
        ),
        Ok(0)
    );
    // Range touching only group 0x40 frees only it, with both linked regions reported.
    assert_eq!(
        s.free_tables(
            r(0x1020_0000, 4096),
            VirtAddr::new(0x1000_0000),
            0x1100_0000,
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
            VirtAddr::new(0x1000_1000),
            1 << 32,
            &mut rec
        ),
        Err(FreeTablesError::BadBounds)
    );
    rec.flush(&mut mem.clone());
    teardown(s, &mem);
}

#[test]
fn user_and_kernel_layouts() {
    let mem = HostMemory::new();
    for n in 1..=7u8 {
        let mut u = AddressSpace::new(mem.clone(), Layout::User { n }, Features::ALL).unwrap();
        let top = (1u64 << 32) >> n;
        let want_frames = ((16384usize >> n) / 4096).max(1);
        assert_eq!(mem.outstanding(), want_frames);
        assert!(u.root().is_aligned(((16384u64) >> n).max(4096)));
        u.map(
            r(top - 8192, 8192),
            PhysAddr::new(0x1000),
            Attributes::USER_DATA,
            MapSize::Page4K,
        )
        .unwrap();
        assert_eq!(
            u.map(
                r(top - 4096, 8192),
                PhysAddr::new(0x1000),
                Attributes::USER_DATA,
                MapSize::Page4K
            ),
            Err(MapError::OutOfRange)
        );
        assert!(u.translate(VirtAddr::new(top as u32)).is_none());
        let mut rec = Rec::default();
        u.unmap(r(top - 8192, 8192), &mut rec).unwrap();
        u.free_tables(r(0, top), VirtAddr::new(0), top, &mut rec)
            .unwrap();
        assert!(!rec.unlinked[0].2, "user tables are ASID-tagged");
        rec.flush(&mut mem.clone());
        teardown(u, &mem);

        let mut k = AddressSpace::new(mem.clone(), Layout::Kernel { n }, Features::ALL).unwrap();
        assert!(k.root().is_aligned(16384));
        k.map(
            r(top, MIB),
            PhysAddr::new(0x10_0000),
            Attributes::KERNEL_DATA,
            MapSize::Section1M,
        )
        .unwrap();
        assert_eq!(
            k.map(
                r(top - 4096, 4096),
                PhysAddr::new(0x1000),
                Attributes::KERNEL_DATA,
                MapSize::Page4K
            ),
            Err(MapError::OutOfRange)
        );
        teardown(k, &mem);
    }
    assert!(matches!(
        AddressSpace::new(mem.clone(), Layout::User { n: 0 }, Features::ALL),
        Err(crate::error::CreateError::InvalidSplit(0))
    ));
    assert_eq!(mem.outstanding(), 0);
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
    assert!(matches!(
        u.map(
            r(0x12000, 4096),
            PhysAddr::new(0x3000),
            Attributes::KERNEL_IMAGE,
            MapSize::Page4K
        ),
        Err(MapError::PxnConflict(_))
    ));
    teardown(u, &mem);
}

/// A map needing `k` new L2 frames, failed at every allocation 1..=k: the tables and the
/// allocator are exactly as before each time; then it succeeds.
#[test]
fn map_failing_at_every_allocation_loses_nothing() {
    let attrs = Attributes::KERNEL_DATA;
    // Existing tables: pages just outside both ends of the big map (sharing its first and
    // last groups), and two empty tables in the middle (frames linked, slots empty).
    let setup = |mem: &HostMemory| {
        let mut s = whole(mem);
        let mut rec = Rec::default();
        for va in [0x1010_0000u64, 0x2ff0_0000, 0x2000_0000, 0x2550_0000] {
            s.map(r(va, 4096), PhysAddr::new(0x1000), attrs, MapSize::Page4K)
                .unwrap();
        }
        s.unmap(r(0x2000_0000, 4096), &mut rec).unwrap();
        s.unmap(r(0x2550_0000, 4096), &mut rec).unwrap();
        s
    };
    // About 510 MiB with the PA 4 KiB off the VA's alignment: small pages everywhere.
    let range = r(0x1011_0000, 0x2ff0_0000 - 0x1011_0000);
    let pa = PhysAddr::new(0x4000_1000);
    // How many frames does it need? Count on a copy of the situation.
    let need = {
        let m2 = HostMemory::new();
        let mut s2 = setup(&m2);
        let f0 = s2.table_frames();
        s2.map(range, pa, attrs, MapSize::Super16M).unwrap();
        let n = s2.table_frames() - f0;
        teardown(s2, &m2);
        n
    };
    assert_eq!(need, 128 - 4, "one frame per 4 MiB group without one");
    let mem = HostMemory::new();
    let mut s = setup(&mem);
    let before_l1 = s.l1_words();
    let before_l2 = s.l2_words();
    let before_out = mem.outstanding();
    let frames_before = s.table_frames();
    for n in 1..=need as u64 {
        mem.fail_nth(Some(n));
        assert_eq!(
            s.map(range, pa, attrs, MapSize::Super16M),
            Err(MapError::OutOfMemory),
            "n = {n}"
        );
        mem.fail_nth(None);
        assert_eq!(mem.outstanding(), before_out, "n = {n}: frames kept");
        assert_eq!(s.table_frames(), frames_before);
        assert_eq!(s.l1_words(), before_l1, "n = {n}: L1 changed");
        assert_eq!(s.l2_words(), before_l2, "n = {n}: L2 changed");
    }
    mem.fail_nth(Some(need as u64 + 1));
    s.map(range, pa, attrs, MapSize::Super16M).unwrap();
    mem.fail_nth(None);
    assert_eq!(s.table_frames(), frames_before + need);
    assert_eq!(
        s.mappings(range).count() as u64,
        range.page_count(),
        "all pages (PA not 64 KiB aligned with VA)"
    );
    teardown(s, &mem);
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
    let mut s = AddressSpace::new(mem.clone(), Layout::Whole, Features::BASELINE).unwrap();
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
    s.free_tables(all(), VirtAddr::new(0), 1 << 32, &mut rec)
        .unwrap();
    assert_eq!(rec.freed, [(PhysAddr::new(t.table.as_u64() & !0xfff), 1)]);
    assert!(s.walk(VirtAddr::new(0x1000_3000)).tables[0].is_none());
    let mut m = mem.clone();
    rec.flush(&mut m);
    // Freed memory is poisoned; walking through it must not panic.
    let _ = s.walk_from(1, t.table, VirtAddr::new(0x1000_3000));
    teardown(s, &mem);
}

// ----- property test against a reference model -----------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Map {
        page: u32,
        pages: u32,
        pa_page: u32,
        attrs: Attributes,
        max: MapSize,
    },
    Unmap {
        page: u32,
        pages: u32,
    },
    Protect {
        page: u32,
        pages: u32,
        access: Access,
        execute: Execute,
    },
    FreeTables {
        page: u32,
        pages: u32,
        floor_back: u32,
        ceil_fwd: u32,
    },
    Translate {
        page: u32,
    },
}

/// The model's VA window: 64 MiB at 0x3000_0000 (sixteen 4 MiB groups), so ops collide.
const WIN: u64 = 0x3000_0000;
const WIN_PAGES: u32 = (64 * MIB / 4096) as u32;

fn arb_access() -> impl Strategy<Value = Access> {
    prop_oneof![
        Just(Access::KernelRw),
        Just(Access::KernelRo),
        Just(Access::KernelRwUserRo),
        Just(Access::UserRw),
        Just(Access::UserRo),
    ]
}

fn arb_execute() -> impl Strategy<Value = Execute> {
    prop_oneof![
        Just(Execute::Never),
        Just(Execute::Anywhere),
        Just(Execute::UserOnly)
    ]
}

fn arb_attrs() -> impl Strategy<Value = Attributes> {
    (
        prop_oneof![
            Just(MemoryType::NormalWriteBack),
            Just(MemoryType::Device),
            Just(MemoryType::NormalNonCacheable),
            Just(MemoryType::StronglyOrdered),
        ],
        arb_access(),
        arb_execute(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(memory, access, execute, global, shareable)| Attributes {
            memory,
            access,
            execute,
            global,
            shareable,
        })
}

/// Page counts and alignments that make every size likely.
fn arb_extent() -> impl Strategy<Value = (u32, u32)> {
    prop_oneof![
        (0..WIN_PAGES, 1..40u32),
        (0..WIN_PAGES / 16, 1..40u32).prop_map(|(p, n)| (p * 16, n * 16)),
        (0..WIN_PAGES / 256, 1..6u32).prop_map(|(p, n)| (p * 256, n * 256)),
        (0..4u32, 1..3u32).prop_map(|(p, n)| (p * 4096, n * 4096)),
    ]
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (arb_extent(), any::<bool>(), arb_attrs(), prop_oneof![
            Just(MapSize::Page4K), Just(MapSize::Large64K),
            Just(MapSize::Section1M), Just(MapSize::Super16M)])
            .prop_map(|((page, pages), same_align, attrs, max)| Op::Map {
                page,
                pages,
                // Same alignment as the VA (blocks possible) or off by one page.
                pa_page: if same_align { page } else { page + 1 },
                attrs,
                max,
            }),
        3 => arb_extent().prop_map(|(page, pages)| Op::Unmap { page, pages }),
        1 => (arb_extent(), arb_access(), arb_execute())
            .prop_map(|((page, pages), access, execute)| Op::Protect { page, pages, access, execute }),
        2 => (arb_extent(), 0..2048u32, 0..2048u32)
            .prop_map(|((page, pages), floor_back, ceil_fwd)| Op::FreeTables { page, pages, floor_back, ceil_fwd }),
        2 => (0..WIN_PAGES).prop_map(|page| Op::Translate { page }),
    ]
}

/// Model: leaf mappings by first VA.
type Model = BTreeMap<u64, Mapping>;

fn model_leaf(m: &Model, va: u64) -> Option<Mapping> {
    let (_, l) = m.range(..=va).next_back()?;
    (va < l.end()).then_some(*l)
}

fn window_range(page: u32, pages: u32) -> VirtRange {
    let start = WIN + u64::from(page) * 4096;
    let end = (start + u64::from(pages) * 4096).min(WIN + u64::from(WIN_PAGES) * 4096);
    VirtRange::new(VirtAddr::new(start as u32), end).unwrap()
}

fn check_against_model(s: &AddressSpace<HostMemory>, model: &Model) {
    let got: Vec<Mapping> = s.mappings(all()).collect();
    let want: Vec<Mapping> = model.values().copied().collect();
    assert_eq!(got, want);
}

fn run_ops(ops: &[Op], features: Features) {
    let mem = HostMemory::new();
    let mut s = AddressSpace::new(mem.clone(), Layout::Whole, features).unwrap();
    let mut model = Model::new();
    let mut rec = Rec::default();
    // Table frames are 1 per group that has an L2 table: recount from the model's side
    // after each op via the space's own counter and the allocator.
    for op in ops {
        let before_l1 = s.l1_words();
        let before_l2 = s.l2_words();
        let before_out = mem.outstanding();
        match *op {
            Op::Map {
                page,
                pages,
                pa_page,
                attrs,
                max,
            } => {
                let range = window_range(page, pages);
                let pa = 0x8000_0000 + u64::from(pa_page) * 4096;
                let overlap = model
                    .values()
                    .any(|m| m.va.as_u64() < range.end() && m.end() > range.start().as_u64());
                match s.map(range, PhysAddr::new(pa), attrs, max) {
                    Ok(()) => {
                        assert!(!overlap, "map over a mapping succeeded");
                        let new: Vec<Mapping> = s.mappings(range).collect();
                        // They tile the range exactly, in order, with the intent's PA and
                        // attributes, and at most `max`.
                        let mut at = range.start().as_u64();
                        for m in &new {
                            assert_eq!(m.va.as_u64(), at);
                            assert_eq!(m.pa.as_u64(), pa + (at - range.start().as_u64()));
                            assert!(m.size <= max);
                            assert_eq!(m.va.as_u64() % m.size.bytes(), 0);
                            assert_eq!(m.attrs, attrs);
                            at += m.size.bytes();
                            model.insert(m.va.as_u64(), *m);
                        }
                        assert_eq!(at, range.end());
                    }
                    Err(e) => {
                        match e {
                            MapError::AlreadyMapped(va) => {
                                assert!(overlap);
                                assert!(model_leaf(&model, va.as_u64()).is_some());
                            }
                            MapError::PxnConflict(_) => {}
                            MapError::Unsupported(_) => assert!(!features.pxn),
                            e => panic!("unexpected {e:?}"),
                        }
                        assert_eq!(s.l1_words(), before_l1);
                        assert_eq!(s.l2_words(), before_l2);
                        assert_eq!(mem.outstanding(), before_out);
                    }
                }
            }
            Op::Unmap { page, pages } => {
                let range = window_range(page, pages);
                let (a, b) = (range.start().as_u64(), range.end());
                let straddle = model
                    .values()
                    .find(|m| {
                        m.va.as_u64() < b && m.end() > a && (m.va.as_u64() < a || m.end() > b)
                    })
                    .copied();
                match s.unmap(range, &mut rec) {
                    Ok(n) => {
                        assert!(straddle.is_none());
                        let gone: Vec<Mapping> = model.range(a..b).map(|(_, m)| *m).collect();
                        assert_eq!(n, gone.len());
                        let reported: Vec<ClearedLeaf> = rec.leaves.drain(..).collect();
                        assert_eq!(reported.len(), gone.len());
                        for (l, m) in reported.iter().zip(&gone) {
                            assert_eq!((l.va, l.size, l.pa), (m.va, m.size, m.pa));
                            assert_eq!(l.global, m.attrs.global);
                            assert_eq!(l.executable, m.attrs.execute != Execute::Never);
                            model.remove(&m.va.as_u64());
                        }
                    }
                    Err(UnmapError::PartialBlock { va, size }) => {
                        let m = straddle.expect("refused without a straddling block");
                        assert_eq!((va, size), (m.va, m.size));
                        assert!(rec.leaves.is_empty());
                        assert_eq!(s.l1_words(), before_l1);
                        assert_eq!(s.l2_words(), before_l2);
                    }
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
            Op::Protect {
                page,
                pages,
                access,
                execute,
            } => {
                let range = window_range(page, pages);
                match s.protect(range, access, execute) {
                    Ok(_) => {
                        let (a, b) = (range.start().as_u64(), range.end());
                        for m in model.range_mut(a..b).map(|(_, m)| m) {
                            m.attrs = m.attrs.with_permissions(access, execute);
                        }
                    }
                    Err(_) => {
                        assert_eq!(s.l1_words(), before_l1);
                        assert_eq!(s.l2_words(), before_l2);
                    }
                }
            }
            Op::FreeTables {
                page,
                pages,
                floor_back,
                ceil_fwd,
            } => {
                let range = window_range(page, pages);
                let floor = range
                    .start()
                    .as_u64()
                    .saturating_sub(u64::from(floor_back) * 4096);
                let ceiling = range.end() + u64::from(ceil_fwd) * 4096;
                let frames = s.table_frames();
                let n = s
                    .free_tables(range, VirtAddr::new(floor as u32), ceiling, &mut rec)
                    .unwrap();
                assert_eq!(s.table_frames(), frames - n);
                assert_eq!(rec.freed.len(), n);
                for &(pa, frames) in &rec.freed {
                    assert_eq!(frames, 1);
                    assert!(mem.is_allocated(pa), "table frame freed before the flush");
                }
                // Each freed frame was a whole group inside [floor, ceiling) with no
                // mapping left in any of its tables.
                for &(va, span, _) in &rec.unlinked {
                    let g = va.as_u64() & !(4 * MIB - 1);
                    assert_eq!(span, MIB);
                    assert!(g >= floor && g + 4 * MIB <= ceiling);
                    assert!(g < range.end() && g + 4 * MIB > range.start().as_u64());
                    assert!(model.range(va.as_u64()..va.as_u64() + MIB).next().is_none());
                }
                // And every empty group eligible was freed: a group inside the bounds that
                // still has a table entry has a page mapping in one of its tables.
                let l1 = s.l1_words();
                let first = range.start().as_u64() / (4 * MIB);
                let last = range.end().div_ceil(4 * MIB);
                for g in first..last {
                    let gs = g * 4 * MIB;
                    if gs < floor || gs + 4 * MIB > ceiling {
                        continue;
                    }
                    let tables: Vec<u64> = (0..4)
                        .filter(|k| l1[(4 * g + k) as usize] & 3 == 1)
                        .map(|k| gs + k * MIB)
                        .collect();
                    if !tables.is_empty() {
                        assert!(
                            tables.iter().any(|&t| model
                                .range(t..t + MIB)
                                .any(|(_, m)| m.size <= MapSize::Large64K)),
                            "empty group {gs:#x} kept"
                        );
                    }
                }
                rec.flush(&mut mem.clone());
            }
            Op::Translate { page } => {
                let va = WIN + u64::from(page) * 4096 + 0x123;
                let t = s.translate(VirtAddr::new(va as u32));
                let m = model_leaf(&model, va);
                assert_eq!(t.map(|t| t.mapping), m);
                if let (Some(t), Some(m)) = (t, m) {
                    assert_eq!(t.pa.as_u64(), m.pa.as_u64() + (va - m.va.as_u64()));
                }
            }
        }
        check_against_model(&s, &model);
        // Frame accounting: L1 + linked L2 frames are exactly what is out.
        assert_eq!(mem.outstanding(), 4 + s.table_frames());
    }
    // Teardown returns every frame.
    let mut m = s.destroy(&mut rec);
    rec.flush(&mut m);
    assert_eq!(mem.outstanding(), 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_ops_match_the_model(ops in proptest::collection::vec(arb_op(), 1..60)) {
        run_ops(&ops, Features::ALL);
    }

    #[test]
    fn random_ops_match_the_model_baseline(ops in proptest::collection::vec(arb_op(), 1..40)) {
        let ops: Vec<Op> = ops.into_iter().map(|op| match op {
            Op::Map { page, pages, pa_page, mut attrs, max } => {
                if attrs.execute == Execute::UserOnly { attrs.execute = Execute::Anywhere; }
                Op::Map { page, pages, pa_page, attrs, max }
            }
            op => op,
        }).collect();
        run_ops(&ops, Features::BASELINE);
    }
}

//! Host tests of the long-descriptor format through the walker: sizes, memory numbers,
//! 40-bit addresses, what the format refuses, free-tables spans over two table levels,
//! layouts and walk counts. The property test against a reference model and the failure
//! injection run over both formats in `table::tests`.

use std::vec::Vec;

use super::*;
use crate::addr::{PhysAddr, VirtAddr, VirtRange};
use crate::short::host::HostMemory;
use crate::table::error::{Feature, MapError, ProtectError};
use crate::table::tests::{all, map_pages, r, sizes, teardown, Rec, GIB, MIB};

fn whole(mem: &HostMemory) -> AddressSpace<HostMemory> {
    crate::table::tests::whole::<Lpae>(mem)
}

#[test]
fn dense_table_memory_numbers() {
    // One level-3 table per 2 MiB and the level-2 table of the GiB: twice the short
    // format's memory (entries twice as wide), below a one-frame root.
    crate::table::tests::dense_pages::<Lpae>(&[(GIB, 1 + 512), (256 * MIB, 1 + 128)], 1);
    // Blocks need no table below them.
    let mem = HostMemory::new();
    let mut s = whole(&mem);
    let a = Attributes::KERNEL_DATA;
    s.map(
        r(0x4000_0000, GIB),
        PhysAddr::new(0x4000_0000),
        a,
        MapSize::Block2M,
    )
    .unwrap();
    assert_eq!(
        s.table_frames(),
        1,
        "1 GiB of 2 MiB blocks: one level-2 table"
    );
    s.map(
        r(0x8000_0000, GIB),
        PhysAddr::new(0x8000_0000),
        a,
        MapSize::Block1G,
    )
    .unwrap();
    assert_eq!(s.table_frames(), 1, "a 1 GiB block: no table");
    assert_eq!(s.mappings(all()).count(), 512 + 1);
    teardown(s, &mem);
}

#[test]
fn picks_largest_size_alignment_allows() {
    let mem = HostMemory::new();
    let mut s = whole(&mem);
    let len = GIB + 2 * MIB + 4096;
    let pa = PhysAddr::new(0x1_4000_0000);
    s.map(
        r(0x4000_0000, len),
        pa,
        Attributes::KERNEL_DATA,
        MapSize::Block1G,
    )
    .unwrap();
    assert_eq!(
        sizes(&s, all()),
        [
            (0x4000_0000, MapSize::Block1G),
            (0x8000_0000, MapSize::Block2M),
            (0x8020_0000, MapSize::Page4K),
        ]
    );
    let mut rec = Rec::default();
    assert_eq!(s.unmap(r(0x4000_0000, len), &mut rec), Ok(3));
    assert_eq!(
        rec.leaves.iter().map(|l| l.size).collect::<Vec<_>>(),
        [MapSize::Block1G, MapSize::Block2M, MapSize::Page4K],
        "one report per block"
    );
    // Sizes LPAE does not have count as the next smaller one: 16 MiB -> 2 MiB blocks,
    // 1 MiB and 64 KiB -> pages.
    let range = r(0x4000_0000, 4 * MIB);
    for (max, want, n) in [
        (MapSize::Super16M, MapSize::Block2M, 2),
        (MapSize::Section1M, MapSize::Page4K, 1024),
        (MapSize::Large64K, MapSize::Page4K, 1024),
    ] {
        s.map(range, pa, Attributes::KERNEL_DATA, max).unwrap();
        let v = sizes(&s, range);
        assert_eq!(v.len(), n, "{max:?}");
        assert!(v.iter().all(|&(_, z)| z == want), "{max:?}");
        s.unmap(range, &mut rec).unwrap();
    }
    // A 2 MiB region that has an (empty) level-3 table is mapped with pages.
    s.map(
        r(0x4000_0000, 2 * MIB),
        pa,
        Attributes::KERNEL_DATA,
        MapSize::Block2M,
    )
    .unwrap();
    assert_eq!(sizes(&s, range).len(), 512);
    rec.flush(&mut mem.clone());
    teardown(s, &mem);
}

#[test]
fn forty_bit_output_addresses() {
    let mem = HostMemory::new();
    let mut s = whole(&mem);
    let a = Attributes::USER_DATA;
    s.map(
        r(0x1000_0000, 8192),
        PhysAddr::new(0xab_cdef_0000),
        a,
        MapSize::Page4K,
    )
    .unwrap();
    s.map(
        r(0xc000_0000, GIB),
        PhysAddr::new(0xff_c000_0000),
        a,
        MapSize::Block1G,
    )
    .unwrap();
    let t = s.translate(VirtAddr::new(0x1000_1234)).unwrap();
    assert_eq!(t.pa, PhysAddr::new(0xab_cdef_1234));
    let t = s.translate(VirtAddr::new(0xc123_4567)).unwrap();
    assert_eq!(
        (t.pa, t.mapping.size),
        (PhysAddr::new(0xff_c123_4567), MapSize::Block1G)
    );
    let before = s.snapshot();
    assert_eq!(
        s.map(
            r(0x2000_0000, 8192),
            PhysAddr::new(0xff_ffff_f000),
            a,
            MapSize::Page4K
        ),
        Err(MapError::PhysUnreachable(PhysAddr::new(0x100_0000_0000)))
    );
    assert_eq!(s.snapshot(), before);
    teardown(s, &mem);
}

#[test]
fn refuses_what_long_descriptors_cannot_say() {
    let mem = HostMemory::new();
    let mut s = whole(&mem);
    s.map(
        r(0x1000_0000, 4096),
        PhysAddr::new(0x1000),
        Attributes::USER_DATA,
        MapSize::Page4K,
    )
    .unwrap();
    let before = s.snapshot();
    let out = mem.outstanding();
    for access in [Access::None, Access::KernelRwUserRo] {
        let attrs = Attributes {
            access,
            ..Attributes::USER_DATA
        };
        assert_eq!(
            s.map(
                r(0x2000_0000, 4096),
                PhysAddr::new(0x2000),
                attrs,
                MapSize::Page4K
            ),
            Err(MapError::Unsupported(Feature::ThreeBitAp))
        );
        assert_eq!(
            s.protect(
                r(0x1000_0000, 4096),
                access,
                Execute::Never,
                &mut Rec::default()
            ),
            Err(ProtectError::Unsupported(Feature::ThreeBitAp))
        );
        assert_eq!(s.snapshot(), before);
        assert_eq!(mem.outstanding(), out);
    }
    teardown(s, &mem);
}

#[test]
fn pxn_is_per_entry() {
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
    // Unlike short L2 tables, a kernel-executable page may share the table.
    s.map(
        r(0x1000_1000, 4096),
        PhysAddr::new(0x2000),
        Attributes::KERNEL_IMAGE,
        MapSize::Page4K,
    )
    .unwrap();
    let exec = |s: &AddressSpace<HostMemory>, va| {
        s.translate(VirtAddr::new(va))
            .unwrap()
            .mapping
            .attrs
            .execute
    };
    assert_eq!(exec(&s, 0x1000_0000), Execute::UserOnly);
    assert_eq!(exec(&s, 0x1000_1000), Execute::Anywhere);
    let c = s
        .protect(
            r(0x1000_0000, 8192),
            Access::UserRo,
            Execute::Anywhere,
            &mut Rec::default(),
        )
        .unwrap()
        .unwrap();
    assert_eq!((c.leaves, c.global, c.executable), (2, true, true));
    assert_eq!(exec(&s, 0x1000_0000), Execute::Anywhere);
    assert_eq!(
        s.translate(VirtAddr::new(0x1000_1000))
            .unwrap()
            .mapping
            .attrs
            .access,
        Access::UserRo
    );
    teardown(s, &mem);
}

#[test]
fn free_tables_over_two_levels_with_floor_and_ceiling() {
    let mem = HostMemory::new();
    let mut s = whole(&mem);
    let mut rec = Rec::default();
    // Pages in two 2 MiB regions of GiB 1 and one of GiB 2.
    map_pages(&mut s, &[0x4000_0000, 0x4060_0000, 0x8000_0000]);
    assert_eq!(
        s.table_frames(),
        2 + 3,
        "two level-2 and three level-3 tables"
    );
    assert_eq!(s.free_tables(all(), VirtRange::ALL, &mut rec), Ok(0));
    s.unmap(r(0x4000_0000, 2 * GIB), &mut rec).unwrap();
    // A ceiling inside GiB 1 frees its level-3 tables below the ceiling, not the level-2
    // table.
    let range = r(0x4000_0000, 4 * MIB);
    assert_eq!(
        s.free_tables(
            range,
            VirtRange::floor_ceiling(VirtAddr::new(0x4000_0000), 0x4040_0000),
            &mut rec
        ),
        Ok(1)
    );
    assert_eq!(rec.unlinked, [(VirtAddr::new(0x4000_0000), 2 * MIB, true)]);
    rec.flush(&mut mem.clone());
    // Bounds covering GiB 1 and only part of GiB 2: both level-3 tables go, GiB 1's
    // level-2 table after them (its span reported), GiB 2's level-2 table stays.
    let range = r(0x4000_0000, GIB + 4 * MIB);
    assert_eq!(
        s.free_tables(
            range,
            VirtRange::floor_ceiling(VirtAddr::new(0x4000_0000), 0x8040_0000),
            &mut rec
        ),
        Ok(3)
    );
    assert_eq!(
        rec.unlinked,
        [
            (VirtAddr::new(0x4060_0000), 2 * MIB, true),
            (VirtAddr::new(0x4000_0000), GIB, true),
            (VirtAddr::new(0x8000_0000), 2 * MIB, true),
        ]
    );
    assert_eq!(rec.freed.len(), 3);
    assert!(rec
        .freed
        .iter()
        .all(|&(pa, n)| n == 1 && mem.is_allocated(pa)));
    assert_eq!(s.table_frames(), 1);
    rec.flush(&mut mem.clone());
    teardown(s, &mem);
}

#[test]
fn user_and_kernel_layouts() {
    // One frame for every root; from T0SZ = 2 the walk starts at level 2, so a page needs
    // one level-3 table and no level-2 table.
    crate::table::tests::layouts::<Lpae>(
        |n| (1, 4096, if n >= 2 { 1 } else { 2 }),
        (1, 4096),
        MapSize::Block2M,
    );
}

#[test]
fn root_at_level_2_takes_no_1_gib_block() {
    // From T0SZ = 2 the root is a level-2 table: a 1 GiB block has no entry to live in,
    // so `Block1G` counts as the largest size the root holds (2 MiB), as sizes the format
    // lacks count as the next smaller one. (A level-1 block descriptor written into a
    // level-2 root entry reads as a 2 MiB block: the rest of the GiB would be unmapped.)
    for n in 2..=3u8 {
        let mem = HostMemory::new();
        let mut s = AddressSpace::new(mem.clone(), Layout::User { n }, Features::ALL).unwrap();
        let top = (1u64 << 32) >> n;
        let a = Attributes::USER_DATA;
        s.map(r(0, top), PhysAddr::new(0x4000_0000), a, MapSize::Block1G)
            .unwrap();
        let got = sizes(&s, all());
        assert_eq!(got.len() as u64, top / (2 * MIB), "n = {n}");
        assert!(got.iter().all(|&(_, size)| size == MapSize::Block2M));
        for va in [0, 0x20_0000, 0x1234_5000, top - 4096] {
            let t = s.translate(VirtAddr::new(va as u32)).expect("mapped");
            assert_eq!(t.pa.as_u64(), 0x4000_0000 + va, "n = {n}, va = {va:#x}");
            assert_eq!(t.mapping.size, MapSize::Block2M);
        }
        assert_eq!(s.table_frames(), 0, "blocks in the root need no table");
        // Nothing can be mapped over it.
        assert_eq!(
            s.map(
                r(0x20_0000, 4096),
                PhysAddr::new(0x1000),
                a,
                MapSize::Block1G
            ),
            Err(MapError::AlreadyMapped(VirtAddr::new(0x20_0000)))
        );
        // Unmapping the whole range clears and reports every 2 MiB of it.
        let mut rec = Rec::default();
        assert_eq!(s.unmap(r(0, top), &mut rec), Ok((top / (2 * MIB)) as usize));
        let bytes: u64 = rec.leaves.iter().map(|l| l.size.bytes()).sum();
        assert_eq!(bytes, top);
        assert_eq!(s.mappings(all()).count(), 0);
        teardown(s, &mem);
    }
}

#[test]
fn walk_reads_one_entry_per_empty_entry() {
    // Four level-1 entries, plus one when the walk resumes after the leaf; the level-2
    // and level-3 tables of 0x8000_0000 once each, plus one re-read of the level-2 entry.
    assert_eq!(
        crate::table::tests::walk_counts::<Lpae>(),
        (4 + 1, 512 + 1, 512)
    );
}

#[test]
fn features_from_id_registers() {
    // QEMU's Cortex-A15 and Cortex-A7: VMSA = 5 (LPAE), coherent walks.
    assert_eq!(
        Features::from_id_regs(0x1020_1105, 0x0210_2211),
        Some(Features::ALL)
    );
    assert_eq!(
        Features::from_id_regs(0x1010_1105, 0x0210_2211),
        Some(Features::ALL)
    );
    // VMSA 4 (PXN, no LPAE): no long descriptors.
    assert_eq!(Features::from_id_regs(0x0000_0004, 0x0210_2211), None);
    assert_eq!(
        Features::from_id_regs(0x0000_0005, 0x0000_0000),
        Some(Features::BASELINE)
    );
}

#[test]
fn pa_field_is_the_address_part_of_every_leaf() {
    use crate::table::Format;
    for s in Lpae::LEAVES {
        for pa in [0u64, 0x40_0000_0000, 0xab_c123_4000, 0xff_ffff_f000] {
            let a = Attributes::USER_DATA;
            assert_eq!(
                Lpae::encode_leaf(s.size, pa, a),
                Lpae::encode_leaf(s.size, 0, a) | Lpae::pa_field(s.size, pa)
            );
        }
    }
    for s in crate::short::Short::LEAVES {
        for pa in [0u64, 0x4000_0000, 0xfedc_b000, 0xab_c500_0000] {
            let a = Attributes::KERNEL_IMAGE;
            type S = crate::short::Short;
            assert_eq!(
                S::encode_leaf(s.size, pa, a),
                S::encode_leaf(s.size, 0, a) | S::pa_field(s.size, pa)
            );
        }
    }
}

#[cfg(feature = "tlb-model")]
#[test]
fn walk_source_reports_both_tables() {
    use crate::tlb::model::WalkSource;
    let mem = HostMemory::new();
    let mut s = whole(&mem);
    s.map(
        r(0x4020_0000, 4096),
        PhysAddr::new(0x5000_0000),
        Attributes::USER_DATA,
        MapSize::Page4K,
    )
    .unwrap();
    s.map(
        r(0x8000_0000, 2 * MIB),
        PhysAddr::new(0x6000_0000),
        Attributes::KERNEL_DATA,
        MapSize::Block2M,
    )
    .unwrap();
    let w = s.walk(VirtAddr::new(0x4020_0123));
    let (t1, t2) = (w.tables[0].unwrap(), w.tables[1].unwrap());
    assert_eq!(
        (t1.level, t1.span_va, t1.span),
        (1, VirtAddr::new(0x4000_0000), GIB)
    );
    assert_eq!(
        (t2.level, t2.span_va, t2.span),
        (2, VirtAddr::new(0x4020_0000), 2 * MIB)
    );
    let leaf = w.leaf.unwrap();
    assert_eq!(
        (leaf.va, leaf.size, leaf.pa, leaf.global),
        (
            VirtAddr::new(0x4020_0000),
            MapSize::Page4K,
            PhysAddr::new(0x5000_0000),
            false
        )
    );
    // A walk-cache hit on either table continues from there.
    assert_eq!(
        s.walk_from(1, t1.table, VirtAddr::new(0x4020_0123)).leaf,
        w.leaf
    );
    assert_eq!(
        s.walk_from(2, t2.table, VirtAddr::new(0x4020_0123)).leaf,
        w.leaf
    );
    let b = s.walk(VirtAddr::new(0x8012_3456));
    assert_eq!(b.tables[0].map(|t| t.span), Some(GIB));
    assert!(b.tables[1].is_none());
    assert_eq!(b.leaf.map(|l| l.size), Some(MapSize::Block2M));
    // After unmap + free, the freed level-3 table (poisoned) must not be walked as valid.
    let mut rec = Rec::default();
    s.unmap(r(0x4020_0000, 4096), &mut rec).unwrap();
    s.free_tables(all(), VirtRange::ALL, &mut rec).unwrap();
    assert_eq!(rec.unlinked.len(), 2);
    rec.flush(&mut mem.clone());
    assert!(s.walk(VirtAddr::new(0x4020_0123)).leaf.is_none());
    let _ = s.walk_from(2, t2.table, VirtAddr::new(0x4020_0123));
    teardown(s, &mem);
}

/// A [`HostMemory`] whose frames sit 4 GiB higher: table memory above 4 GiB.
#[derive(Clone)]
struct HighMemory(HostMemory);

const HIGH: u64 = 1 << 32;

// SAFETY: every frame is a `HostMemory` frame, allocated, freed and reached through it;
// only the physical addresses the crate sees are moved up by 4 GiB, consistently.
unsafe impl crate::memory::Memory for HighMemory {
    fn allocate_frames(&mut self, count: usize, align: usize) -> Option<PhysAddr> {
        let pa = self.0.allocate_frames(count, align)?;
        Some(PhysAddr::new(pa.as_u64() + HIGH))
    }
    fn free_frames(&mut self, pa: PhysAddr, count: usize) {
        self.0.free_frames(PhysAddr::new(pa.as_u64() - HIGH), count)
    }
    fn phys_to_virt(&self, pa: PhysAddr) -> core::ptr::NonNull<u8> {
        self.0.phys_to_virt(PhysAddr::new(pa.as_u64() - HIGH))
    }
}

#[test]
fn tables_above_4_gib() {
    let host = HostMemory::new();
    let mem = HighMemory(host.clone());
    // Long descriptors reach table memory anywhere below 1 TiB.
    let mut s = AddressSpace::new(mem.clone(), Layout::Whole, Features::ALL).unwrap();
    assert!(s.root().as_u64() >= HIGH);
    map_pages(&mut s, &[0x4000_0000, 0x4060_0000]);
    assert_eq!(s.table_frames(), 3);
    assert_eq!(
        s.translate(VirtAddr::new(0x4060_0123)).map(|t| t.pa),
        Some(PhysAddr::new(0x1123))
    );
    let mut rec = Rec::default();
    s.unmap(all(), &mut rec).unwrap();
    assert_eq!(s.free_tables(all(), VirtRange::ALL, &mut rec), Ok(3));
    assert!(rec.freed.iter().all(|&(pa, _)| pa.as_u64() >= HIGH));
    let mut m = s.destroy(&mut rec);
    for (pa, n) in rec.freed.drain(..) {
        crate::memory::Memory::free_frames(&mut m, pa, n);
    }
    assert_eq!(host.outstanding(), 0);
    // Short descriptors cannot point there: refused, nothing kept.
    assert!(matches!(
        crate::short::AddressSpace::new(mem, Layout::Whole, crate::short::Features::ALL),
        Err(crate::table::error::CreateError::TableUnreachable(_))
    ));
    assert_eq!(host.outstanding(), 0);
}

#[test]
fn t1sz_split_spaces_cover_their_parts() {
    // Linux's LPAE 3G/1G split: `T0SZ = 0`, `T1SZ = 2`. The process's table covers the
    // VAs below 0xC000_0000 from a level-1 root, the kernel's the top GiB from a level-2
    // root (one 2 MiB entry per slot, indexed by VA[29:21] as the walker does).
    let mem = HostMemory::new();
    let split = 0xC000_0000u64;
    let mut kernel =
        AddressSpace::new(mem.clone(), Layout::KernelHigh { t1sz: 2 }, Features::ALL).unwrap();
    let user_mem = HostMemory::new();
    let mut user =
        AddressSpace::new(user_mem.clone(), Layout::UserLow { t1sz: 2 }, Features::ALL).unwrap();
    assert_eq!(kernel.layout().bounds(), (split, 1 << 32));
    assert_eq!(user.layout().bounds(), (0, split));
    let ka = Attributes::KERNEL_DATA;
    // A 1 GiB request in the level-2 root becomes 2 MiB blocks.
    kernel
        .map(
            r(split, 1 << 30),
            PhysAddr::new(0x1_0000_0000),
            ka,
            MapSize::Block1G,
        )
        .unwrap();
    let got = sizes(&kernel, all());
    assert_eq!(got.len(), 512);
    assert!(got.iter().all(|&(_, size)| size == MapSize::Block2M));
    assert_eq!(kernel.table_frames(), 0, "blocks in the root need no table");
    for va in [split, split + 0x20_1234, 0xffff_f000] {
        let t = kernel.translate(VirtAddr::new(va as u32)).expect("mapped");
        assert_eq!(t.pa.as_u64(), 0x1_0000_0000 + (va - split), "va = {va:#x}");
    }
    // Slot 1 of the root holds 0xC020_0000: the root is indexed below the region.
    let p1 = kernel
        .entry_ptr_for_test(VirtAddr::new(0xC020_0000))
        .unwrap();
    let p0 = kernel
        .entry_ptr_for_test(VirtAddr::new(split as u32))
        .unwrap();
    assert_eq!(p1.as_ptr() as usize - p0.as_ptr() as usize, 8);
    // Each refuses the other part, on both the write and the read side.
    assert_eq!(
        kernel.map(
            r(split - 4096, 4096),
            PhysAddr::new(0x1000),
            ka,
            MapSize::Page4K
        ),
        Err(MapError::OutOfRange)
    );
    assert!(kernel.translate_checked(VirtAddr::new(0x1000)).is_err());
    let ua = Attributes::USER_DATA;
    user.map(
        r(split - 4096, 4096),
        PhysAddr::new(0x4000_0000),
        ua,
        MapSize::Page4K,
    )
    .unwrap();
    assert_eq!(
        user.map(
            r(split, 4096),
            PhysAddr::new(0x4000_0000),
            ua,
            MapSize::Page4K
        ),
        Err(MapError::OutOfRange)
    );
    assert!(user.translate_checked(VirtAddr::new(split as u32)).is_err());
    // A process part takes no global leaf, as `Layout::User`.
    assert_eq!(
        user.map(
            r(0x1000, 4096),
            PhysAddr::new(0x4000_0000),
            ka,
            MapSize::Page4K
        ),
        Err(MapError::GlobalInUserSpace)
    );
    // Typed roots for the bring-up and the activation check.
    use crate::arch::root::RootLayout;
    assert_eq!(
        kernel.table_root().layout(),
        RootLayout::KernelHigh { t1sz: 2 }
    );
    assert_eq!(user.table_root().layout(), RootLayout::UserLow { t1sz: 2 });
    let mut rec = Rec::default();
    assert_eq!(kernel.unmap(r(split, 1 << 30), &mut rec), Ok(512));
    teardown(kernel, &mem);
    teardown(user, &user_mem);
}

#[test]
fn t1sz_layouts_refused_where_they_cannot_exist() {
    let mem = HostMemory::new();
    for t1sz in [0, 8] {
        assert_eq!(
            AddressSpace::new(mem.clone(), Layout::KernelHigh { t1sz }, Features::ALL).err(),
            Some(crate::table::error::CreateError::InvalidSplit(t1sz))
        );
    }
    // Short descriptors have no `T1SZ`.
    for layout in [Layout::UserLow { t1sz: 2 }, Layout::KernelHigh { t1sz: 2 }] {
        assert_eq!(
            crate::short::AddressSpace::new(mem.clone(), layout, crate::short::Features::ALL).err(),
            Some(crate::table::error::CreateError::UnsupportedLayout(layout))
        );
    }
    assert_eq!(mem.outstanding(), 0, "nothing allocated by a refusal");
}

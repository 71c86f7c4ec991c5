//! [`AddressSpace::map`] in two phases: plan and check every chunk and count the table
//! frames it needs (`plan_map`), take them all or none (`take_frames`), then write
//! (`apply_map`, linking new tables with `link_table`). The choice of leaf size per chunk
//! (`choose`, `run`) and the table-frame list are shared with block splitting (`split`).

use super::store::{clean_for_walker, publish, write_entry, zero_table};
use super::{AddressSpace, Table, LIST_END, PAGE};
use crate::addr::{PhysAddr, VirtAddr, VirtRange};
use crate::memory::Memory;
use crate::sink::MapSize;
use crate::table::attrs::{Attributes, Execute};
use crate::table::error::MapError;
use crate::table::{Format, Kind, LeafShape, Word};

impl<F: Format, M: Memory> AddressSpace<F, M> {
    /// Whether `copies` entries at `level` for `va` are free: the walk reaches an invalid
    /// entry above `level`, or all of them are invalid (not a leaf, not an even empty
    /// table).
    pub(super) fn free_at(&self, va: u64, level: u8, copies: usize) -> bool {
        let mut t = Table::Root;
        let mut l = self.root.level;
        loop {
            let idx = self.index(l, va);
            if l == level {
                return (idx..idx + copies).all(|i| self.load(t, i).to_u64() & F::VALID_MASK == 0);
            }
            let raw = self.load(t, idx);
            if raw.to_u64() & F::VALID_MASK == 0 {
                return true;
            }
            match F::kind(&self.features, l, raw) {
                Kind::Table => {
                    t = Table::At(self.table_at(F::table_pa(raw)));
                    l += 1;
                }
                _ => return false,
            }
        }
    }

    /// Whether this space can have leaves of shape `s`: the CPU has the size, and its
    /// level is not above the root's (a long-descriptor root at level 2, for
    /// `Layout::User { n >= 2 }`, has no entry that could hold a 1 GiB block).
    #[inline(always)]
    pub(super) fn holds(&self, s: LeafShape) -> bool {
        s.level >= self.root.level && F::size_usable(&self.features, s.size)
    }

    /// The leaf shape of the next chunk of a map at `va -> pa` ending at `end`: the
    /// largest size up to `max` that the CPU has, that VA and PA alignment and the
    /// remaining length allow, and whose entries are free.
    pub(super) fn choose(&self, va: u64, pa: u64, end: u64, max: MapSize) -> LeafShape {
        // The last shape seen: after the loop, the last of `LEAVES` (a last-level page,
        // which the loop returns for any page chunk anyway).
        let mut last = F::LEAVES[0];
        for &s in F::LEAVES {
            last = s;
            if s.size > max || !self.holds(s) {
                continue;
            }
            let b = s.size.bytes();
            if va & (b - 1) != 0 || pa & (b - 1) != 0 || end - va < b {
                continue;
            }
            if s.level == F::LAST_LEVEL || self.free_at(va, s.level, s.copies) {
                return s;
            }
        }
        last
    }

    /// How many consecutive chunks from `va -> pa` have shape `s` (the shape `choose` picked
    /// at `va`), in one table: every one up to the end of its table, of the range, or the
    /// next VA where the next bigger leaf could start, and for a leaf above the last level
    /// only while its entries are free (a table there means smaller leaves). So `map`
    /// checks and writes runs of pages, large pages, sections or blocks in one loop,
    /// calling `choose` once per run: `choose` at any VA inside the run would pick `s`
    /// again.
    #[inline]
    pub(super) fn run(&self, s: LeafShape, va: u64, pa: u64, end: u64, max: MapSize) -> u64 {
        // `s` is one of `LEAVES`: always found.
        let pos = F::LEAVES.iter().position(|l| l.size == s.size).unwrap_or(0);
        let b = s.size.bytes();
        let mut stop = end;
        if s.level > self.root.level {
            let span = Self::span(s.level - 1);
            stop = stop.min((va & !(span - 1)) + span);
        }
        // The next bigger size that could be chosen; if VA and PA disagree modulo it, no
        // bigger size ever fits.
        if let Some(l) = F::LEAVES[..pos]
            .iter()
            .rev()
            .find(|&&l| l.size <= max && self.holds(l))
        {
            let lb = l.size.bytes();
            if (va ^ pa) & (lb - 1) == 0 {
                stop = stop.min((va & !(lb - 1)) + lb);
            }
        }
        // `b` is a power of two: a shift, not a 64-bit division.
        let n = ((stop - va) >> b.trailing_zeros()).max(1);
        if s.level == F::LAST_LEVEL || n == 1 {
            // Last-level entries have nothing below them: `plan_map` checks each is free.
            return n;
        }
        match self.table_for(va, s.level) {
            // No table on the way: every entry below the invalid one is free.
            None => n,
            Some(t) => {
                let idx = self.index(s.level, va);
                let free = |k: u64| {
                    let first = idx + k as usize * s.copies;
                    (first..first + s.copies).all(|i| self.load(t, i).to_u64() & F::VALID_MASK == 0)
                };
                (1..n).find(|&k| !free(k)).unwrap_or(n)
            }
        }
    }

    /// The table at `level` on the walk for `va`, or `None` if the walk meets an invalid
    /// (or leaf) entry above it.
    pub(super) fn table_for(&self, va: u64, level: u8) -> Option<Table<F::Word>> {
        let mut t = Table::Root;
        let mut l = self.root.level;
        while l < level {
            let raw = self.load(t, self.index(l, va));
            match self.kind(l, raw) {
                Kind::Table => t = Table::At(self.table_at(F::table_pa(raw))),
                _ => return None,
            }
            l += 1;
        }
        Some(t)
    }

    /// Maps `range` to the physical range starting at `pa` with `attrs`, using the largest
    /// mappings up to `max` that alignment (of both VA and PA) and the tables allow (a
    /// region that already has a table is mapped with smaller leaves). Sizes the format
    /// does not have count as the next smaller one (short: 2 MiB / 1 GiB mean 1 MiB /
    /// 16 MiB; long: 64 KiB / 1 MiB mean 4 KiB, 16 MiB means 2 MiB), and so do sizes the
    /// layout's root table cannot hold (long descriptors with `Layout::User { n >= 2 }`,
    /// whose root is a level-2 table: 1 GiB means 2 MiB).
    ///
    /// Nothing is written before everything is checked and every needed table frame is
    /// allocated, so on error the tables are exactly as before and every frame taken has
    /// been returned. New entries are published to the table walkers before this returns
    /// (`dsb` + `isb` on the target); no TLB maintenance is needed because only invalid
    /// entries are written — but if the range was unmapped or its tables freed, that
    /// flush must have completed first.
    ///
    /// # Errors
    /// [`MapError::OutOfRange`], [`MapError::Misaligned`], [`MapError::PhysUnreachable`],
    /// [`MapError::AlreadyMapped`] (some VA of the range is mapped), [`MapError::PxnConflict`],
    /// [`MapError::Unsupported`], [`MapError::ExecutableDevice`] (device or
    /// strongly-ordered memory must be execute-never), [`MapError::GlobalInUserSpace`]
    /// (a [`Layout::User`](crate::table::Layout::User) space takes only not-global leaves), [`MapError::OutOfMemory`],
    /// [`MapError::TableUnreachable`].
    pub fn map(
        &mut self,
        range: VirtRange,
        pa: PhysAddr,
        attrs: Attributes,
        max: MapSize,
    ) -> Result<(), MapError> {
        if range.is_empty() {
            return Ok(());
        }
        if !self.check_range(&range) {
            return Err(MapError::OutOfRange);
        }
        if !pa.is_aligned(PAGE) {
            return Err(MapError::Misaligned(pa));
        }
        if pa.checked_add(range.len()).is_none() {
            return Err(MapError::PhysUnreachable(pa));
        }
        F::check_permissions(&self.features, attrs.access, attrs.execute)
            .map_err(MapError::Unsupported)?;
        if !attrs.memory.is_normal() && attrs.execute != Execute::Never {
            return Err(MapError::ExecutableDevice);
        }
        if attrs.global && self.layout.is_user() {
            return Err(MapError::GlobalInUserSpace);
        }
        let (start, end) = (range.start().as_u64(), range.end().as_u64());
        let need = self.plan_map(start, end, pa.as_u64(), attrs.execute, max)?;
        let mut list = self.take_frames(need)?;
        self.apply_map(start, end, pa.as_u64(), attrs, max, &mut list);
        // Nothing should be left; if a bug left frames, give them back rather than leak.
        while let Some(f) = self.pop_frame(&mut list) {
            debug_assert!(false, "map took more frames than it used");
            self.mem.free_frames(PhysAddr::new(f), 1);
        }
        publish(self.coherent());
        Ok(())
    }

    /// The table at `level` (below the root) that the last chunk used, if `va` is in it.
    fn cached(
        cache: Option<(u8, u64, Table<F::Word>)>,
        level: u8,
        va: u64,
    ) -> Option<Table<F::Word>> {
        match cache {
            Some((l, base, t)) if l == level && va >= base && va - base < Self::span(l - 1) => {
                Some(t)
            }
            _ => None,
        }
    }

    /// Phase 1 of `map`: check everything, count the table frames to allocate.
    fn plan_map(
        &self,
        start: u64,
        end: u64,
        pa0: u64,
        execute: Execute,
        max: MapSize,
    ) -> Result<usize, MapError> {
        let mut need = 0;
        // By level: end of the last group this map will allocate a frame for.
        let mut planned = [0u64; 4];
        let mut cache = None;
        let mut va = start;
        let mut pa = pa0;
        while va < end {
            let s = self.choose(va, pa, end, max);
            let n = self.run(s, va, pa, end, max);
            let bytes = n * s.size.bytes();
            let limit = F::pa_limit(&self.features, s.size);
            if pa + bytes > limit {
                // The first chunk that does not fit.
                let fit = limit.saturating_sub(pa) / s.size.bytes();
                let at = pa + fit * s.size.bytes();
                return Err(MapError::PhysUnreachable(PhysAddr::new(at)));
            }
            let table = if s.level == self.root.level {
                Some(Table::Root)
            } else if let Some(t) = Self::cached(cache, s.level, va) {
                Some(t)
            } else {
                let t = self.plan_path(va, s.level, execute, &mut need, &mut planned)?;
                if let Some(t) = t {
                    cache = Some((s.level, va & !(Self::span(s.level - 1) - 1), t));
                }
                t
            };
            if let Some(t) = table {
                let idx = self.index(s.level, va);
                for k in 0..n as usize * s.copies {
                    if self.load(t, idx + k).to_u64() & F::VALID_MASK != 0 {
                        let at = va + k as u64 * Self::span(s.level);
                        return Err(MapError::AlreadyMapped(VirtAddr::new(at as u32)));
                    }
                }
            }
            va += bytes;
            pa += bytes;
        }
        Ok(need)
    }

    /// Walks towards the table at `target` for `va`: the existing table, or `None` when
    /// the walk reaches an invalid entry (then counts the frames of the new tables, once
    /// per group, skipping groups whose frame exists or that this map already counted).
    fn plan_path(
        &self,
        va: u64,
        target: u8,
        execute: Execute,
        need: &mut usize,
        planned: &mut [u64; 4],
    ) -> Result<Option<Table<F::Word>>, MapError> {
        let mut t = Table::Root;
        let mut level = self.root.level;
        while level < target {
            let idx = self.index(level, va);
            let raw = self.load(t, idx);
            match self.kind(level, raw) {
                Kind::Table => {
                    if !F::table_allows(F::table_ctx(raw), execute) {
                        return Err(MapError::PxnConflict(VirtAddr::new(va as u32)));
                    }
                    t = Table::At(self.table_at(F::table_pa(raw)));
                    level += 1;
                }
                Kind::Leaf(_) => return Err(MapError::AlreadyMapped(VirtAddr::new(va as u32))),
                Kind::Invalid => {
                    for l in level + 1..=target {
                        let group = Self::span(l - 1) * Self::per_frame(l) as u64;
                        if va < planned[l as usize] {
                            continue;
                        }
                        if l == level + 1 && self.group_frame(t, level, idx).is_some() {
                            continue;
                        }
                        *need += 1;
                        planned[l as usize] = (va & !(group - 1)) + group;
                    }
                    return Ok(None);
                }
            }
        }
        Ok(Some(t))
    }

    /// Allocates `need` table frames, chained through their first word; all or nothing.
    pub(super) fn take_frames(&mut self, need: usize) -> Result<u64, MapError> {
        let mut list = LIST_END;
        for _ in 0..need {
            let err = match self.mem.allocate_frames(1, PAGE as usize) {
                Some(f) if f.is_aligned(PAGE) && f.as_u64() + PAGE <= F::TABLE_PA_LIMIT => {
                    let p = self.mem.phys_to_virt(f).cast::<u64>();
                    // SAFETY: a frame we own and have not linked; 8-byte aligned.
                    unsafe { p.as_ptr().write(list) };
                    list = f.as_u64();
                    continue;
                }
                Some(f) => {
                    self.mem.free_frames(f, 1);
                    MapError::TableUnreachable(f)
                }
                None => MapError::OutOfMemory,
            };
            while let Some(f) = self.pop_frame(&mut list) {
                self.mem.free_frames(PhysAddr::new(f), 1);
            }
            return Err(err);
        }
        Ok(list)
    }

    pub(super) fn pop_frame(&mut self, list: &mut u64) -> Option<u64> {
        if *list == LIST_END {
            return None;
        }
        let f = *list;
        let p = self.mem.phys_to_virt(PhysAddr::new(f)).cast::<u64>();
        // SAFETY: `f` is a frame `take_frames` allocated and chained; not linked.
        *list = unsafe { p.as_ptr().read() };
        Some(f)
    }

    /// Phase 2 of `map`: write. Makes exactly the decisions `plan_map` checked.
    fn apply_map(
        &mut self,
        start: u64,
        end: u64,
        pa0: u64,
        attrs: Attributes,
        max: MapSize,
        list: &mut u64,
    ) {
        // The attribute bits of each leaf size, computed once, when the size is first used.
        let mut templates: [Option<F::Word>; 4] = [None; 4];
        let coherent = self.coherent();
        let mut cache = None;
        let mut va = start;
        let mut pa = pa0;
        while va < end {
            let s = self.choose(va, pa, end, max);
            let t = if s.level == self.root.level {
                Table::Root
            } else if let Some(t) = Self::cached(cache, s.level, va) {
                t
            } else {
                let Some(t) = self.make_path(va, s.level, attrs, list) else {
                    return;
                };
                cache = Some((s.level, va & !(Self::span(s.level - 1) - 1), t));
                t
            };
            let i = F::LEAVES.iter().position(|l| l.size == s.size).unwrap_or(0);
            let template =
                *templates[i & 3].get_or_insert_with(|| F::encode_leaf(s.size, 0, attrs));
            let n = self.run(s, va, pa, end, max);
            let mut idx = self.index(s.level, va);
            for _ in 0..n {
                let raw = template.to_u64() | F::pa_field(s.size, pa).to_u64();
                let raw = F::Word::from_u64(raw);
                for k in idx..idx + s.copies {
                    write_entry(coherent, self.slot(t, k), raw);
                }
                idx += s.copies;
                va += s.size.bytes();
                pa += s.size.bytes();
            }
        }
    }

    /// The table at `target` for `va`, linking new tables on the way (in their group's
    /// frame, or in a frame from `list`). Only called for paths `plan_map` checked.
    fn make_path(
        &mut self,
        va: u64,
        target: u8,
        attrs: Attributes,
        list: &mut u64,
    ) -> Option<Table<F::Word>> {
        let mut t = Table::Root;
        let mut level = self.root.level;
        while level < target {
            let idx = self.index(level, va);
            let raw = self.load(t, idx);
            let child = match self.kind(level, raw) {
                Kind::Table => self.table_at(F::table_pa(raw)),
                _ => {
                    let ctx = F::new_table_ctx(self.layout, &self.features, attrs);
                    self.link_table(t, level, idx, ctx, list)?
                }
            };
            t = Table::At(child);
            level += 1;
        }
        Some(t)
    }

    /// Links a new, empty table under entry `idx` of `t` (a table at `level`).
    pub(super) fn link_table(
        &mut self,
        t: Table<F::Word>,
        level: u8,
        idx: usize,
        ctx: F::TableCtx,
        list: &mut u64,
    ) -> Option<*mut F::Word> {
        let child = level + 1;
        let bytes = F::ENTRIES[child as usize] * F::Word::BYTES;
        let pf = Self::per_frame(child);
        let coherent = self.coherent();
        let offset = ((idx & (pf - 1)) * bytes) as u64;
        let table = match self.group_frame(t, level, idx) {
            Some(frame) => {
                let table = frame + offset;
                // The slot of an unlinked entry is zero already (tables are emptied before
                // their frame is unlinked); clear it anyway so a stray word can never
                // become live. Not linked yet, so plain stores are enough.
                let p = self.table_at(table);
                // SAFETY: the slot of a frame we own, not referenced by any entry (a table is
                // 1 KiB or 4 KiB, 8-byte aligned).
                unsafe { zero_table(p, bytes) };
                clean_for_walker(coherent, p, bytes);
                table
            }
            None => {
                let Some(f) = self.pop_frame(list) else {
                    // Cannot happen: `plan_map` counted this group.
                    debug_assert!(false, "map planned too few frames");
                    return None;
                };
                let p = self.mem.phys_to_virt(PhysAddr::new(f));
                // SAFETY: a fresh 4 KiB frame we own, not yet linked.
                unsafe { zero_table(p.as_ptr(), PAGE as usize) };
                clean_for_walker(coherent, p.as_ptr(), PAGE as usize);
                self.table_frames += 1;
                f + offset
            }
        };
        // The zeroes must reach the walkers before the entry that makes them reachable.
        publish(coherent);
        write_entry(coherent, self.slot(t, idx), F::encode_table(table, ctx));
        Some(self.table_at(table))
    }
}

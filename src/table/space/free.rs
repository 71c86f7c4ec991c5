//! Giving table memory back: [`AddressSpace::free_tables`] (Linux `free_pgd_range`
//! floor/ceiling semantics, bottom-up over the levels, a frame's group at a time) and
//! [`AddressSpace::destroy`], which unmaps everything, frees every table and reports the
//! root. The frames go to the sink; the gather frees them after its flush.

use super::store::{publish, write_entry};
use super::{AddressSpace, Table, PAGE, TOP};
use crate::addr::{PhysAddr, VirtAddr, VirtRange};
use crate::memory::Memory;
use crate::sink::UnmapSink;
use crate::table::error::FreeTablesError;
use crate::table::{Format, Kind, Word};

impl<F: Format, M: Memory> AddressSpace<F, M> {
    /// Frees empty tables over `range` with Linux `free_pgd_range` semantics: the unit is a
    /// group (the tables sharing one frame: a 4 MiB group of four short L2 tables, one
    /// LPAE table of 2 MiB or 1 GiB); a group's frame is released only if all its tables are
    /// empty and the whole group lies within `bounds` (Linux's `[floor, ceiling)`: what
    /// neighbouring users of the address space still need lies outside; [`VirtRange::ALL`]
    /// when there are none). Lower levels go first, so an LPAE
    /// level-2 table whose level-3 tables were all freed here is freed too. For each freed
    /// frame, every entry that pointed into it is cleared and reported with
    /// `table_unlinked(entry VA, entry span, global)`, then the frame with
    /// `table_memory_freed(frame, 1)`. Nothing is freed directly. Returns the number of
    /// frames released.
    ///
    /// `global` is true unless the layout is [`Layout::User`](crate::table::Layout::User) (whose walks are tagged
    /// with the process's ASID). VAs outside the layout's bounds count as unused: a
    /// `bounds` starting at the layout's start, or ending at its end, reaches past them.
    ///
    /// # Errors
    /// [`FreeTablesError::OutOfRange`]; [`FreeTablesError::BadBounds`] unless `bounds`
    /// covers `range`.
    pub fn free_tables<S: UnmapSink + ?Sized>(
        &mut self,
        range: VirtRange,
        bounds: VirtRange,
        sink: &mut S,
    ) -> Result<usize, FreeTablesError> {
        if !self.check_range(&range) {
            return Err(FreeTablesError::OutOfRange);
        }
        if !bounds.covers(&range) {
            return Err(FreeTablesError::BadBounds);
        }
        let (floor, ceiling) = (bounds.start(), bounds.end().as_u64());
        if range.is_empty() {
            return Ok(0);
        }
        let global = !self.layout.is_user();
        // VAs outside the layout are never mapped through this table: bounds at the
        // layout's edges reach past them (a long-descriptor `Kernel` root entry spans VAs
        // below the split).
        let (lo, hi) = self.bounds;
        let floor = if floor.as_u64() <= lo {
            0
        } else {
            floor.as_u64()
        };
        let ceiling = if ceiling >= hi { TOP } else { ceiling };
        let bounds = (range.start().as_u64(), range.end().as_u64(), floor, ceiling);
        let freed = self.free_level(Table::Root, self.root.level, bounds, global, sink);
        publish(self.coherent());
        Ok(freed)
    }

    /// `free_tables` below table `t` (at `level`): `(start, end, floor, ceiling)`.
    fn free_level<S: UnmapSink + ?Sized>(
        &mut self,
        t: Table<F::Word>,
        level: u8,
        (start, end, floor, ceiling): (u64, u64, u64, u64),
        global: bool,
        sink: &mut S,
    ) -> usize {
        if level >= F::LAST_LEVEL {
            return 0;
        }
        let child = level + 1;
        let span = Self::span(level);
        let pf = Self::per_frame(child);
        let group = span * pf as u64;
        let coherent = self.coherent();
        let mut freed = 0;
        let mut g = start & !(group - 1);
        while g < end {
            let i0 = self.index(level, g);
            // Lower levels first: their tables' entries here are cleared as they go.
            if child < F::LAST_LEVEL {
                for k in 0..pf {
                    let e = g + k as u64 * span;
                    let raw = self.load(t, i0 + k);
                    if e < end && e + span > start && self.kind(level, raw) == Kind::Table {
                        let below = Table::At(self.table_at(F::table_pa(raw)));
                        let clip = (start.max(e), end.min(e + span), floor, ceiling);
                        freed += self.free_level(below, child, clip, global, sink);
                    }
                }
            }
            if g >= floor && g + group <= ceiling {
                // The group's entries (at most four, 16-byte aligned) are consecutive in one
                // frame of `t`: read them once.
                const { assert!(PAGE as usize / (F::ENTRIES[2] * F::Word::BYTES) <= 4) };
                let first = self.slot(t, i0);
                let mut tables = [None; 4];
                let mut frame = None;
                for (k, e) in tables.iter_mut().enumerate().take(pf) {
                    // SAFETY: `i0 + k` is an entry of the group, in the same frame as `i0`.
                    let p = unsafe { first.add(k) };
                    // SAFETY: an aligned entry of a table we own.
                    let raw = unsafe { F::Word::load(p) };
                    if self.kind(level, raw) == Kind::Table {
                        let pa = F::table_pa(raw);
                        frame.get_or_insert(pa & !0xfff);
                        *e = Some((p, pa));
                    }
                }
                if let Some(frame) = frame {
                    let empty = tables
                        .iter()
                        .flatten()
                        .all(|&(_, pa)| self.table_empty(self.table_at(pa), child));
                    if empty {
                        for (k, e) in tables.iter().enumerate() {
                            if let Some((p, _)) = *e {
                                write_entry(coherent, p, F::Word::ZERO);
                                let va = VirtAddr::new((g + k as u64 * span) as u32);
                                sink.table_unlinked(va, span, global);
                            }
                        }
                        self.table_frames = self.table_frames.saturating_sub(1);
                        freed += 1;
                        sink.table_memory_freed(PhysAddr::new(frame), 1);
                    }
                }
            }
            g += group;
        }
        freed
    }

    /// Tears the space down: unmaps everything (reporting every leaf), unlinks and reports
    /// every table frame, and finally reports the root frames with `table_memory_freed`.
    /// The caller must have switched every CPU away from this table; the flush its sink
    /// does then covers any walk-cache entries left. Returns the memory model.
    pub fn destroy<S: UnmapSink + ?Sized>(mut self, sink: &mut S) -> M {
        let (lo, hi) = self.bounds;
        // The bounds are page aligned, so this range always exists; neither call can fail
        // over the whole space (no leaf straddles its bounds).
        if let Ok(all) = VirtRange::from_start_len(VirtAddr::new(lo as u32), hi.saturating_sub(lo))
        {
            let _ = self.unmap(all, sink);
            let _ = self.free_tables(all, all, sink);
        }
        debug_assert_eq!(self.table_frames, 0);
        sink.table_memory_freed(self.root_pa, self.root.frames);
        self.mem
    }
}

//! [`AddressSpace::protect`]: checks (range, permissions, cut blocks, PXN and device
//! conflicts) before any write, then the `Protector` visitor over the shared walk rewrites
//! single entries in place and replicated ones with break-before-make, [`BBM_BATCH`] to a
//! flush. `split` reuses the checks and the walk for `protect_split`.

use core::ops::ControlFlow;

#[cfg(test)]
use super::store::store_probe;
use super::store::{publish, write_entry};
use super::{AddressSpace, Each, Found, NoTally, Visitor};
use crate::addr::{VirtAddr, VirtEnd, VirtRange};
use crate::memory::Memory;
use crate::sink::{ChangedLeaf, MapSize, UnmapSink};
use crate::table::attrs::{Access, Execute};
use crate::table::error::ProtectError;
use crate::table::{Changed, Format, Word};

/// How many replicated leaves `protect` clears before one break-before-make flush.
pub const BBM_BATCH: usize = 16;

/// A replicated leaf between break and make: (first entry, copies, new descriptor).
type Broken<W> = (*mut W, usize, W);

/// `protect`'s visitor: rewrites single entries in place, and replicated ones with
/// break-before-make, [`BBM_BATCH`] to a flush.
struct Protector<'s, F: Format, S: UnmapSink + ?Sized> {
    sink: &'s mut S,
    coherent: bool,
    access: Access,
    execute: Execute,
    first: Option<u64>,
    last_end: u64,
    changed: Changed,
    /// Replicated leaves cleared and reported, waiting for the flush before their new
    /// copies are written: (first entry, copies, new descriptor).
    broken: [Option<Broken<F::Word>>; BBM_BATCH],
    nbroken: usize,
    /// The last decision: a leaf of this size, with these descriptor bits outside its
    /// output address, under this table context, gets these new bits (`None`: unchanged),
    /// and is executable / global. A run of leaves with one set of attributes is decoded
    /// and encoded once.
    memo: Option<Memo<F::TableCtx>>,
}

/// [`Protector`]'s last decision: (size, old bits without the output address, table
/// context, new bits without the output address with executable and global, or `None`).
type Memo<C> = (MapSize, u64, C, Option<(u64, bool, bool)>);

impl<F: Format, S: UnmapSink + ?Sized> Protector<'_, F, S> {
    /// The "make" half: once the sink's flush has completed, no TLB holds an old copy of
    /// any cleared leaf, and the new copies may be written.
    fn make(&mut self) {
        if self.nbroken == 0 {
            return;
        }
        // The clears must reach the walkers before the invalidates that follow them.
        publish(self.coherent);
        #[cfg(test)]
        let skip = store_probe::mutant() == store_probe::Mutant::NoFlush;
        #[cfg(not(test))]
        let skip = false;
        if !skip {
            self.sink.flush_now();
        }
        for b in self.broken[..self.nbroken].iter_mut() {
            if let Some((slot, copies, raw)) = b.take() {
                for k in 0..copies {
                    // SAFETY: the copies of a leaf are consecutive entries of its table,
                    // which the space owns (found by the walker during this call).
                    write_entry(self.coherent, unsafe { slot.add(k) }, raw);
                }
            }
        }
        self.nbroken = 0;
    }
}

impl<F: Format, S: UnmapSink + ?Sized> Visitor<F, ()> for Protector<'_, F, S> {
    #[inline(always)]
    fn leaf(&mut self, l: Found<F>) -> ControlFlow<()> {
        let pa = l.pa();
        let pa_bits = F::pa_field(l.size, pa).to_u64();
        // The attribute bits: what `leaf_attrs` decodes (it reads no output-address bit).
        let key = l.raw.to_u64() ^ pa_bits;
        let decided = match self.memo {
            Some((size, k, ctx, d)) if size == l.size && k == key && ctx == l.ctx => d,
            _ => {
                // The checks before the walk make `execute` agree with the table's context.
                let old = l.attrs();
                let new = old.with_permissions(self.access, self.execute);
                let d = (new != old).then(|| {
                    let executable = old.execute != Execute::Never || new.execute != Execute::Never;
                    (
                        F::encode_leaf(l.size, 0, new).to_u64(),
                        executable,
                        old.global,
                    )
                });
                self.memo = Some((l.size, key, l.ctx, d));
                d
            }
        };
        let Some((bits, executable, global)) = decided else {
            return ControlFlow::Continue(());
        };
        // `encode_leaf(size, pa, a) == encode_leaf(size, 0, a) | pa_field(size, pa)`.
        let raw = F::Word::from_u64(bits | pa_bits);
        debug_assert!(
            raw == F::encode_leaf(
                l.size,
                pa,
                l.attrs().with_permissions(self.access, self.execute)
            )
        );
        let copies = F::shape(l.size).copies;
        #[cfg(test)]
        let copies_in_place = store_probe::mutant() == store_probe::Mutant::InPlace;
        #[cfg(not(test))]
        let copies_in_place = false;
        if copies > 1 && !copies_in_place {
            if self.nbroken == BBM_BATCH {
                self.make();
            }
            for k in 0..copies {
                // SAFETY: as in `make`.
                write_entry(self.coherent, unsafe { l.slot.add(k) }, F::Word::ZERO);
            }
            self.broken[self.nbroken] = Some((l.slot, copies, raw));
            self.nbroken += 1;
            self.changed.replicated += 1;
        } else {
            for k in 0..copies {
                // SAFETY: as in `make` (one copy unless a test mutant writes 16 in place).
                write_entry(self.coherent, unsafe { l.slot.add(k) }, raw);
            }
        }
        self.sink.leaf_changed(ChangedLeaf {
            va: VirtAddr::new(l.va as u32),
            size: l.size,
            global,
            executable,
        });
        self.first.get_or_insert(l.va);
        self.last_end = l.end();
        self.changed.leaves += 1;
        self.changed.global |= global;
        self.changed.executable |= executable;
        ControlFlow::Continue(())
    }
}

impl<F: Format, M: Memory> AddressSpace<F, M> {
    /// Changes the access and execute permissions of every leaf in `range`, keeping output
    /// address, size, memory type, shareability and global-ness (changing those needs
    /// break-before-make: unmap, flush, map), and reports every changed leaf to `sink`
    /// ([`UnmapSink::leaf_changed`]), which owes its invalidate: pass the address space's
    /// `MmuGather` and the change gets the gather's range tracking, threshold and
    /// branch-predictor rule, as `unmap` does. Until the gather has flushed, a CPU may still
    /// use the old permissions (a write to a page just made read-only may succeed).
    ///
    /// A single entry is rewritten in place (a single-copy-atomic store; a walk sees the old
    /// or the new entry, and the flush removes the old one). A *replicated* leaf (a short
    /// large page or supersection: 16 identical entries) is rewritten with
    /// break-before-make: all its copies are cleared and reported, the sink flushes
    /// ([`UnmapSink::flush_now`]), then the new copies are written. Writing the copies one by
    /// one over live entries would let a CPU with several walks in flight load one TLB entry
    /// from an old copy and another from a new one: two overlapping entries with different
    /// permissions, which the architecture makes a TLB conflict (Arm ARM B3.10.1; see
    /// [`crate::hazards`]). Up to [`BBM_BATCH`] replicated leaves share one flush. While they
    /// are cleared, an access to them takes a translation fault, so a kernel that protects
    /// live replicated mappings other CPUs use must treat such a fault as "retry after the
    /// address-space lock" (as Linux does for break-before-make on arm64).
    ///
    /// Returns `None` when nothing changed.
    ///
    /// # Errors
    /// [`ProtectError::OutOfRange`], [`ProtectError::PartialBlock`],
    /// [`ProtectError::PxnConflict`] (a short-descriptor page's table has the other PXN),
    /// [`ProtectError::Unsupported`], [`ProtectError::ExecutableDevice`] (`execute` is not
    /// [`Execute::Never`] and the range holds device or strongly-ordered memory); all
    /// checked before anything is written or reported.
    pub fn protect<S: UnmapSink + ?Sized>(
        &mut self,
        range: VirtRange,
        access: Access,
        execute: Execute,
        sink: &mut S,
    ) -> Result<Option<Changed>, ProtectError> {
        let Some((start, end)) = self.protect_bounds(range, access, execute)? else {
            return Ok(None);
        };
        if let Some(l) = self.straddling(start, end) {
            return Err(ProtectError::PartialBlock {
                va: VirtAddr::new(l.va as u32),
                size: l.size,
            });
        }
        self.protect_conflicts(start, end, execute)?;
        Ok(self.protect_walk(range, access, execute, sink))
    }

    /// The checks `protect` and `protect_split` share: `None` for an empty range, else its
    /// bounds once the range and the permissions are valid for this space.
    pub(super) fn protect_bounds(
        &self,
        range: VirtRange,
        access: Access,
        execute: Execute,
    ) -> Result<Option<(u64, u64)>, ProtectError> {
        if range.is_empty() {
            return Ok(None);
        }
        if !self.check_range(&range) {
            return Err(ProtectError::OutOfRange);
        }
        F::check_permissions(&self.features, access, execute).map_err(ProtectError::Unsupported)?;
        Ok(Some((range.start().as_u64(), range.end().as_u64())))
    }

    /// `protect`'s checks of every leaf overlapping `[start, end)`.
    pub(super) fn protect_conflicts(
        &self,
        start: u64,
        end: u64,
        execute: Execute,
    ) -> Result<(), ProtectError> {
        // With `Execute::Never` neither check below can fail (any memory may be
        // execute-never, and every table of both formats allows it: `Format::table_allows`,
        // checked by `gather::protect_tests::every_table_allows_execute_never`), so the walk
        // is skipped.
        if execute == Execute::Never {
            return Ok(());
        }
        let conflict = self.visit_range(
            start,
            end,
            &mut NoTally,
            &mut Each(|l: Found<F>| {
                let va = VirtAddr::new(l.va as u32);
                if execute != Execute::Never && !l.attrs().memory.is_normal() {
                    ControlFlow::Break(ProtectError::ExecutableDevice(va))
                } else if !F::table_allows(l.ctx, execute) {
                    ControlFlow::Break(ProtectError::PxnConflict(va))
                } else {
                    ControlFlow::Continue(())
                }
            }),
        );
        match conflict {
            ControlFlow::Break(e) => Err(e),
            ControlFlow::Continue(()) => Ok(()),
        }
    }

    /// The writes of `protect` over a checked range no leaf straddles.
    pub(super) fn protect_walk<S: UnmapSink + ?Sized>(
        &mut self,
        range: VirtRange,
        access: Access,
        execute: Execute,
        sink: &mut S,
    ) -> Option<Changed> {
        let (start, end) = (range.start().as_u64(), range.end().as_u64());
        let coherent = self.coherent();
        let mut changer = Protector::<F, S> {
            sink,
            coherent,
            access,
            execute,
            first: None,
            last_end: 0,
            changed: Changed {
                span: range,
                leaves: 0,
                replicated: 0,
                split: 0,
                global: false,
                executable: false,
            },
            broken: [None; BBM_BATCH],
            nbroken: 0,
            memo: None,
        };
        let _ = self.visit_range(start, end, &mut NoTally, &mut changer);
        changer.make();
        publish(coherent);
        let first = changer.first?;
        let mut changed = changer.changed;
        changed.span = VirtEnd::new(changer.last_end)
            .and_then(|end| VirtRange::new(VirtAddr::new(first as u32), end))
            .unwrap_or(changed.span);
        Some(changed)
    }
}

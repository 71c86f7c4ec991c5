//! The address-space lock: what a kernel must hold while it maps, zaps and frees tables,
//! written down once and enforced by the types.
//!
//! # The rules
//!
//! | operation | lock | gather | notes |
//! | --- | --- | --- | --- |
//! | `map` | held | none | writes only invalid entries; must not map a VA that an unfinished gather still covers (its stale TLB entry would break break-before-make) |
//! | `unmap` (zap) | held while the walker runs | required, of this space | the gather may be finished after the lock is dropped; it is counted in the space's [`InFlight`] |
//! | `free_tables` | held while the walker runs | required, of this space | table frames go back only after the flush *and* the table-free sync |
//! | `protect` | held | none | the caller flushes the returned span before relying on reduced rights |
//! | `translate`, `mappings` | held (a shared borrow of the space) | none | or [`LockedAddressSpace::translate_lockless`] without the lock |
//! | `destroy` | ownership (no other reference exists) | made inside (teardown) | every CPU must have switched away from the table |
//! | switch to the space | not held | none | the ASID lives next to the lock, in an [`AsidContext`] |
//!
//! Why each:
//!
//! - **One writer of descriptors.** `map` decides sizes and table allocations from what it
//!   reads, then writes; `unmap` and `free_tables` read-modify-write entries and a table's
//!   emptiness. Two of them interleaved would lose frames or link a table twice. So every
//!   table write happens under one lock per address space: [`LockedAddressSpace::lock`].
//! - **The gather outlives the lock, not the other way round.** Clearing entries needs the
//!   lock; flushing and freeing do not, and a long flush (or a wait for lockless walkers)
//!   should not stall every other mapper. So the gather is created from the space (not
//!   from the guard), lives outside the lock, and may finish after the guard is dropped.
//!   That is why [`InFlight`] lives next to the lock and not inside it: two CPUs may each
//!   hold an open gather on the space, the lock held by neither, and the one that finishes
//!   while the other is still open must invalidate the whole ASID
//!   ([`crate::gather::Fallback::Nested`]).
//! - **Zap and free only into a gather of this space.** [`SpaceGuard::unmap`] and
//!   [`SpaceGuard::free_tables`] take a [`SpaceGather`], which only
//!   [`LockedAddressSpace::gather`] makes, with the space's scope, ASID source, in-flight
//!   count and table-free sync; a gather of another space is refused
//!   ([`ZapError::ForeignGather`]). There is no way to reach the raw `unmap` with an
//!   arbitrary sink (which could free before the flush) through these types.
//! - **Do not map over a pending unmap.** The types cannot know which VAs another CPU's
//!   open gather covers; the kernel's VMA-level exclusion must ensure a range is not
//!   mapped again before the gather that unmapped it has finished (Linux's `mmap_lock`
//!   held for write across `munmap`). Holding the [`SpaceGuard`] across the unmap *and*
//!   the finish is the simple way.
//! - **Destroy needs ownership.** [`LockedAddressSpace::destroy`] takes `self`: no other
//!   CPU can hold the lock, an open gather or a lockless walk of it (each borrows the
//!   space). It still cannot know whether a CPU runs the table: the kernel must have
//!   switched them all away (see [`crate::asid`]).
//!
//! # Lockless walkers
//!
//! [`LockedAddressSpace::with_lockless_walkers`] attaches [`WalkEpochs`]: every gather the
//! space makes then syncs with them before it frees table memory, and
//! [`LockedAddressSpace::translate_lockless`] walks without the lock inside a section of
//! those epochs (a guard of other epochs is refused). A kernel with another sync (an IPI
//! round) attaches it with [`LockedAddressSpace::with_table_sync`]; lockless walks through
//! this module then need epochs.
//!
//! # Formats
//!
//! Everything here is generic over the descriptor format ([`crate::table::Format`]): the
//! rules above hold for short-descriptor and LPAE spaces alike, and lockless walks follow
//! the same protocol down two or three levels. The format parameter defaults to
//! [`Short`], so `LockedAddressSpace<M>` and `SpaceGuard<'_, M>` are the short-descriptor
//! types; an LPAE kernel names `LockedAddressSpace<M, Lpae>` (built from an
//! [`crate::lpae::AddressSpace`]). `activate` (ARM only) switches either format through
//! the ASID allocator and the format's program of [`crate::arch::switch`].

use core::ops::Deref;

use crate::addr::{PhysAddr, VirtAddr, VirtRange};
#[cfg(target_arch = "arm")]
use crate::asid::SwitchError;
use crate::asid::{AsidContext, RESERVED_ASID};
use crate::gather::{FlushReport, GatherConfig, InFlight, MmuGather, Scope, TableFreeSync};
use crate::lockless::{LocklessLeaf, TableView, WalkEpochs, WalkGuard};
use crate::memory::Memory;
use crate::short::Short;
use crate::sink::MapSize;
use crate::table::attrs::{Access, Attributes, Execute};
use crate::table::error::{FreeTablesError, MapError, ProtectError, UnmapError};
use crate::table::{AddressSpace, Changed, Format, Layout};
use crate::tlb::TlbBackend;

/// An address space behind its page-table lock, with what lives next to it: the count of
/// gathers in flight, its ASID context, and the table-free sync of its lockless walkers.
///
/// `F` is the descriptor format of the space: [`Short`] (the default, so
/// `LockedAddressSpace<M>` wraps a `short::AddressSpace<M>`) or [`crate::lpae::Lpae`]
/// (`LockedAddressSpace<M, Lpae>` wraps an `lpae::AddressSpace<M>`). Everything here
/// works the same for both, except `activate` (on ARM), which is the short-descriptor
/// `TTBR0` + `CONTEXTIDR` switch and exists for `LockedAddressSpace<M, Short>` only.
pub struct LockedAddressSpace<M: Memory, F: Format = Short> {
    space: spin::Mutex<AddressSpace<F, M>>,
    in_flight: InFlight,
    asid: AsidContext,
    table_sync: Option<&'static (dyn TableFreeSync + Sync)>,
    /// Address of the walk epochs lockless walks must be inside (0: none attached).
    walk_epochs: usize,
    view: TableView<F>,
    root: PhysAddr,
    layout: Layout,
    /// CPUs that ran the space (set by `activate` before the switch; for `tlb::ipi`).
    cpus: crate::tlb::ipi::CpuMask,
}

/// Why a zap through a [`SpaceGuard`] was refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ZapError {
    /// The gather belongs to another address space.
    ForeignGather,
    /// The unmap itself refused (nothing was cleared).
    Unmap(UnmapError),
    /// `free_tables` refused (nothing was freed).
    FreeTables(FreeTablesError),
    /// `protect` refused (nothing was changed).
    Protect(ProtectError),
}

/// Why a lockless walk was refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LocklessError {
    /// No walk epochs are attached to this space
    /// ([`LockedAddressSpace::with_lockless_walkers`]), or the guard is of other epochs:
    /// table frees would not wait for this walk.
    NotSynced,
    /// The VA is in the other half of the split (not a translation fault).
    OutOfRange(crate::table::error::OutOfRange),
}

/// A locked address space, for mapping and zapping. Dereferences to the space for reads
/// (`translate`, `mappings`, `root`, ...); writes go through its methods.
pub struct SpaceGuard<'a, M: Memory, F: Format = Short> {
    guard: spin::MutexGuard<'a, AddressSpace<F, M>>,
    owner: usize,
}

/// A gather made by [`LockedAddressSpace::gather`]: the only kind [`SpaceGuard::unmap`]
/// and [`SpaceGuard::free_tables`] accept. Dereferences to the [`MmuGather`] for its
/// report and counters.
#[must_use = "a gather must be finished (or dropped) to flush the TLB and free its frames"]
pub struct SpaceGather<'s, B: TlbBackend, N: Memory> {
    gather: MmuGather<'s, B, N>,
    owner: usize,
}

/// What [`LockedAddressSpace::destroy`] hands back.
pub struct Destroyed<M> {
    /// The space's memory model.
    pub memory: M,
    /// What the teardown gather did.
    pub report: FlushReport,
    /// The space's ASID context: give it to [`crate::asid::AsidAllocator::release`] to
    /// reuse the number at once (the teardown flush was broadcast), or drop it.
    pub asid: AsidContext,
}

impl<M: Memory, F: Format> LockedAddressSpace<M, F> {
    /// Puts `space` behind its lock, with no gather in flight, no ASID yet and no table-free
    /// sync.
    pub fn new(space: AddressSpace<F, M>) -> Self {
        let root = space.root();
        let layout = space.layout();
        let view = TableView::new(&space);
        Self {
            space: spin::Mutex::new(space),
            in_flight: InFlight::new(),
            asid: AsidContext::new(),
            table_sync: None,
            walk_epochs: 0,
            view,
            root,
            layout,
            cpus: crate::tlb::ipi::CpuMask::new(),
        }
    }

    /// The same space, whose gathers call `sync` before they free table memory (an IPI
    /// round or grace period the kernel provides for its own lockless walkers).
    #[must_use]
    pub fn with_table_sync(mut self, sync: &'static (dyn TableFreeSync + Sync)) -> Self {
        self.table_sync = Some(sync);
        self.walk_epochs = 0;
        self
    }

    /// The same space, walked without the lock under `epochs`: its gathers sync with them
    /// before freeing table memory, and [`LockedAddressSpace::translate_lockless`] accepts
    /// guards of these epochs.
    #[must_use]
    pub fn with_lockless_walkers<const CPUS: usize>(
        mut self,
        epochs: &'static WalkEpochs<CPUS>,
    ) -> Self {
        self.table_sync = Some(epochs);
        self.walk_epochs = epochs.id() as usize;
        self
    }

    fn id(&self) -> usize {
        self as *const Self as usize
    }

    /// A kernel-layout space is loaded once into `TTBR1`, never switched to.
    #[cfg(target_arch = "arm")]
    fn ttbr0_space(&self) -> Result<(), SwitchError> {
        match self.layout {
            Layout::Kernel { .. } | Layout::KernelHigh { .. } => Err(SwitchError::NotTtbr0),
            _ => Ok(()),
        }
    }

    /// The typed root of this space in `format` (the caller's impl knows which).
    #[cfg(target_arch = "arm")]
    fn table_root(&self, format: crate::arch::root::RootFormat) -> crate::arch::root::TableRoot {
        crate::arch::root::TableRoot::new(self.root, format, self.layout.into())
    }

    /// Takes the page-table lock (spinning).
    pub fn lock(&self) -> SpaceGuard<'_, M, F> {
        SpaceGuard {
            guard: self.space.lock(),
            owner: self.id(),
        }
    }

    /// Takes the page-table lock if it is free.
    pub fn try_lock(&self) -> Option<SpaceGuard<'_, M, F>> {
        self.space.try_lock().map(|guard| SpaceGuard {
            guard,
            owner: self.id(),
        })
    }

    /// Physical address of the root table (fixed for the life of the space).
    pub fn root(&self) -> PhysAddr {
        self.root
    }

    /// The layout of the space.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The CPUs that have run this space: `activate` marks the CPU before its switch, and
    /// an [`crate::tlb::ipi::IpiTlb`] for the space interrupts them (a kernel with its own
    /// switch calls [`crate::tlb::ipi::CpuMask::enter`] before its `TTBR0` write).
    pub fn cpus(&self) -> &crate::tlb::ipi::CpuMask {
        &self.cpus
    }

    /// Gathers in flight on this space.
    pub fn in_flight(&self) -> &InFlight {
        &self.in_flight
    }

    /// The space's ASID context (what [`crate::asid::AsidAllocator::switch_to`] takes).
    pub fn asid_context(&self) -> &AsidContext {
        &self.asid
    }

    fn scope(&self, teardown: bool) -> Scope {
        match self.layout {
            Layout::Kernel { .. } | Layout::KernelHigh { .. } => Scope::Kernel,
            _ => {
                let asid = self.asid.asid().unwrap_or(RESERVED_ASID);
                if teardown {
                    Scope::Teardown(asid)
                } else {
                    Scope::Asid(asid)
                }
            }
        }
    }

    /// Starts a gather on this space with the default [`GatherConfig`]: scope from the
    /// layout (the kernel space, or the space's ASID, read again at every flush), counted
    /// in the space's in-flight count, syncing with its lockless walkers.
    pub fn gather<B: TlbBackend, N: Memory>(&self, backend: B, memory: N) -> SpaceGather<'_, B, N> {
        self.gather_with_config(backend, memory, GatherConfig::DEFAULT)
    }

    /// [`LockedAddressSpace::gather`] with explicit tunables.
    pub fn gather_with_config<B: TlbBackend, N: Memory>(
        &self,
        backend: B,
        memory: N,
        config: GatherConfig,
    ) -> SpaceGather<'_, B, N> {
        let mut gather =
            MmuGather::with_config(self.scope(false), backend, memory, &self.in_flight, config)
                .with_asid_source(&self.asid);
        if let Some(sync) = self.table_sync {
            gather = gather.with_table_sync(sync);
        }
        SpaceGather {
            gather,
            owner: self.id(),
        }
    }

    /// Translates `va` without the lock, inside the walk section `guard`. Tables the walk
    /// reads are not freed before it returns (every gather of this space waits for the
    /// section first); the answer may be out of date by the time it is used, as any
    /// lockless answer is.
    ///
    /// # Errors
    /// [`LocklessError::NotSynced`] unless `guard` belongs to the epochs attached with
    /// [`LockedAddressSpace::with_lockless_walkers`]; [`LocklessError::OutOfRange`] for a
    /// VA in the other half of a split.
    pub fn translate_lockless<N: Memory>(
        &self,
        va: VirtAddr,
        guard: &WalkGuard<'_>,
        mem: &N,
    ) -> Result<Option<LocklessLeaf>, LocklessError> {
        self.translate_lockless_with(va, guard, mem, &mut || {})
    }

    /// [`LockedAddressSpace::translate_lockless`], running `between_levels` after each
    /// table entry read and before the read of the table below it (short descriptors:
    /// between the L1 and L2 reads; a slow or interrupted walker; tests use it to widen
    /// the window in which a table could be freed under the walk).
    ///
    /// # Errors
    /// As [`LockedAddressSpace::translate_lockless`].
    pub fn translate_lockless_with<N: Memory>(
        &self,
        va: VirtAddr,
        guard: &WalkGuard<'_>,
        mem: &N,
        between_levels: &mut dyn FnMut(),
    ) -> Result<Option<LocklessLeaf>, LocklessError> {
        if self.walk_epochs == 0 || guard.owner() as usize != self.walk_epochs {
            return Err(LocklessError::NotSynced);
        }
        // SAFETY: the root table lives as long as `self` (only `destroy`, which takes
        // `self`, frees it). Tables below it are freed only by gathers made by `self.gather*` (the only
        // ones `SpaceGuard` accepts) or by `destroy`, all of which sync with the walk
        // epochs `guard` belongs to (checked above) before freeing table memory, so no
        // table reachable during this walk section is freed before it ends. `mem` maps
        // the table frames (the caller's memory model, as for the space itself).
        unsafe { self.view.walk(va, mem, between_levels) }.map_err(LocklessError::OutOfRange)
    }

    /// Tears the space down: unmaps everything and frees every table through one teardown
    /// gather (one whole-ASID flush per batch, broadcast if `backend` is), syncing with
    /// lockless walkers before table memory goes back.
    ///
    /// Every CPU must have switched away from the table first (to another space, or parked
    /// on a table with no non-global entries): a CPU that still runs it could walk freed
    /// tables. Ownership guarantees nobody else holds the lock, a gather or a walk.
    pub fn destroy<B: TlbBackend, N: Memory>(self, backend: B, memory: N) -> Destroyed<M> {
        let scope = self.scope(true);
        let LockedAddressSpace {
            space,
            in_flight,
            asid,
            table_sync,
            ..
        } = self;
        let space = space.into_inner();
        let mut gather = MmuGather::new(scope, backend, memory, &in_flight).with_asid_source(&asid);
        if let Some(sync) = table_sync {
            gather = gather.with_table_sync(sync);
        }
        let memory = space.destroy(&mut gather);
        let report = gather.finish();
        Destroyed {
            memory,
            report,
            asid,
        }
    }
}

#[cfg(target_arch = "arm")]
impl<M: Memory> LockedAddressSpace<M, Short> {
    /// Switches this CPU (`cpu`) to the space: ASID from `alloc` (with the local flush it
    /// may owe), then the architected `TTBR0` + ASID switch. See
    /// `AsidAllocator::activate`(crate::asid::AsidAllocator::activate).
    ///
    /// # Errors
    /// [`SwitchError::NotTtbr0`] for a kernel-layout space; as
    /// `AsidAllocator::activate`(crate::asid::AsidAllocator::activate).
    ///
    /// # Safety
    /// As [`crate::arch::mmu::activate`]: everything this CPU uses after the switch must be
    /// mapped identically through this space (below the split) and `TTBR1`; `cpu` is this
    /// CPU's number.
    #[cfg(target_arch = "arm")]
    pub unsafe fn activate<const CPUS: usize>(
        &self,
        alloc: &crate::asid::AsidAllocator<CPUS>,
        cpu: usize,
    ) -> Result<crate::asid::Switch, SwitchError> {
        self.ttbr0_space()?;
        // Marked before the switch can walk the tables (see `tlb::ipi`).
        self.cpus
            .enter(cpu)
            .map_err(|e| SwitchError::NoSuchCpu(e.0))?;
        // SAFETY: the caller's contract; the context is this space's, `root` its table.
        unsafe {
            alloc.activate(
                cpu,
                &self.asid,
                &self.table_root(crate::arch::root::RootFormat::Short),
            )
        }
    }
}

#[cfg(target_arch = "arm")]
impl<M: Memory> LockedAddressSpace<M, crate::lpae::Lpae> {
    /// Switches this CPU (`cpu`) to the long-descriptor space: ASID from `alloc`, then one
    /// 64-bit `TTBR0` write with the owed local flush while parked. See
    /// `AsidAllocator::activate_lpae`(crate::asid::AsidAllocator::activate_lpae).
    ///
    /// # Errors
    /// [`SwitchError::NotTtbr0`] for a kernel-layout space; as
    /// `AsidAllocator::activate_lpae`(crate::asid::AsidAllocator::activate_lpae).
    ///
    /// # Safety
    /// As [`crate::arch::lpae::activate`]; `cpu` is this CPU's number.
    pub unsafe fn activate<const CPUS: usize>(
        &self,
        alloc: &crate::asid::AsidAllocator<CPUS>,
        cpu: usize,
    ) -> Result<crate::asid::Switch, SwitchError> {
        self.ttbr0_space()?;
        // Marked before the switch can walk the tables (see `tlb::ipi`).
        self.cpus
            .enter(cpu)
            .map_err(|e| SwitchError::NoSuchCpu(e.0))?;
        // SAFETY: the caller's contract; the context is this space's, `root` its table.
        unsafe {
            alloc.activate_lpae(
                cpu,
                &self.asid,
                &self.table_root(crate::arch::root::RootFormat::Lpae),
            )
        }
    }
}

impl<M: Memory, F: Format> SpaceGuard<'_, M, F> {
    /// [`AddressSpace::map`] under the lock (no gather: nothing is freed).
    ///
    /// Break-before-make across gathers is the caller's: do not map at a VA that a gather
    /// still open on this space (on any CPU) unmapped, until that gather has flushed. The
    /// old translation may still be cached until then, and a new mapping would then have
    /// two live translations. The lock does not know which VAs open gathers hold; a kernel
    /// gets this for free by finishing the gather before it drops the lock it unmapped
    /// under (as Linux holds `mmap_lock` across `unmap_region`), or by not reusing a range
    /// until its unmap returned.
    ///
    /// # Errors
    /// As [`AddressSpace::map`].
    pub fn map(
        &mut self,
        range: VirtRange,
        pa: PhysAddr,
        attrs: Attributes,
        max: MapSize,
    ) -> Result<(), MapError> {
        self.guard.map(range, pa, attrs, max)
    }

    /// [`AddressSpace::unmap`] into `gather`, which must be a gather of this space.
    ///
    /// # Errors
    /// [`ZapError::ForeignGather`] (nothing cleared), or the unmap's own error.
    pub fn unmap<B: TlbBackend, N: Memory>(
        &mut self,
        range: VirtRange,
        gather: &mut SpaceGather<'_, B, N>,
    ) -> Result<usize, ZapError> {
        let sink = owned(self.owner, gather)?;
        self.guard.unmap(range, sink).map_err(ZapError::Unmap)
    }

    /// [`AddressSpace::unmap_split`] into `gather`, which must be a gather of this space:
    /// blocks the range cuts are split (break-before-make, one extra flush) instead of
    /// refused.
    ///
    /// # Errors
    /// [`ZapError::ForeignGather`] (nothing changed), or the split unmap's own error.
    pub fn unmap_split<B: TlbBackend, N: Memory>(
        &mut self,
        range: VirtRange,
        gather: &mut SpaceGather<'_, B, N>,
    ) -> Result<usize, ZapError> {
        let sink = owned(self.owner, gather)?;
        self.guard.unmap_split(range, sink).map_err(ZapError::Unmap)
    }

    /// [`AddressSpace::protect_split`] into `gather`, which must be a gather of this space.
    ///
    /// # Errors
    /// [`ZapError::ForeignGather`] (nothing changed), or the split protect's own error.
    pub fn protect_split<B: TlbBackend, N: Memory>(
        &mut self,
        range: VirtRange,
        access: Access,
        execute: Execute,
        gather: &mut SpaceGather<'_, B, N>,
    ) -> Result<Option<Changed>, ZapError> {
        let sink = owned(self.owner, gather)?;
        self.guard
            .protect_split(range, access, execute, sink)
            .map_err(ZapError::Protect)
    }

    /// [`AddressSpace::free_tables`] into `gather`, which must be a gather of this space.
    ///
    /// # Errors
    /// [`ZapError::ForeignGather`] (nothing freed), or `free_tables`' own error.
    pub fn free_tables<B: TlbBackend, N: Memory>(
        &mut self,
        range: VirtRange,
        bounds: VirtRange,
        gather: &mut SpaceGather<'_, B, N>,
    ) -> Result<usize, ZapError> {
        let sink = owned(self.owner, gather)?;
        self.guard
            .free_tables(range, bounds, sink)
            .map_err(ZapError::FreeTables)
    }

    /// [`AddressSpace::protect`] into `gather`, which must be a gather of this space: the
    /// new permissions are in force for every CPU once the gather has flushed (`finish`).
    ///
    /// # Errors
    /// [`ZapError::ForeignGather`] (nothing changed), or `protect`'s own error.
    pub fn protect<B: TlbBackend, N: Memory>(
        &mut self,
        range: VirtRange,
        access: Access,
        execute: Execute,
        gather: &mut SpaceGather<'_, B, N>,
    ) -> Result<Option<Changed>, ZapError> {
        let sink = owned(self.owner, gather)?;
        self.guard
            .protect(range, access, execute, sink)
            .map_err(ZapError::Protect)
    }
}

/// The gather's `MmuGather` if it is a gather of the space `owner` names, else
/// [`ZapError::ForeignGather`] (the check every zap through a guard starts with).
fn owned<'g, 's, B: TlbBackend, N: Memory>(
    owner: usize,
    gather: &'g mut SpaceGather<'s, B, N>,
) -> Result<&'g mut MmuGather<'s, B, N>, ZapError> {
    if gather.owner == owner {
        Ok(&mut gather.gather)
    } else {
        Err(ZapError::ForeignGather)
    }
}

impl<M: Memory, F: Format> SpaceGuard<'_, M, F> {
    /// Test hook: the space itself, mutably, past every rule of this module (any sink,
    /// any gather). Only for tests that show what the rules prevent (freeing before the
    /// flush, a gather outside the in-flight count, a table freed without the sync): the
    /// same scenario through the guarded methods must pass.
    #[doc(hidden)]
    pub fn raw_for_test(&mut self) -> &mut AddressSpace<F, M> {
        &mut self.guard
    }
}

impl<M: Memory, F: Format> Deref for SpaceGuard<'_, M, F> {
    type Target = AddressSpace<F, M>;
    fn deref(&self) -> &AddressSpace<F, M> {
        &self.guard
    }
}

impl<'s, B: TlbBackend, N: Memory> SpaceGather<'s, B, N> {
    /// Flushes now (see [`MmuGather::flush`]); the gather stays open.
    pub fn flush(&mut self) {
        self.gather.flush();
    }

    /// Flushes, frees and reports (see [`MmuGather::finish`]).
    pub fn finish(self) -> FlushReport {
        self.gather.finish()
    }
}

impl<'s, B: TlbBackend, N: Memory> Deref for SpaceGather<'s, B, N> {
    type Target = MmuGather<'s, B, N>;
    fn deref(&self) -> &MmuGather<'s, B, N> {
        &self.gather
    }
}

#[cfg(all(test, feature = "std"))]
mod tests;

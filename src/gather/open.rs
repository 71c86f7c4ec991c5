//! Opening a gather ([`MmuGather::new`], [`MmuGather::with_config`] and the builders that
//! attach a table-free sync or an ASID source) and reading its state: scope, handles,
//! what is pending, the report so far. The flush itself is in `flush.rs`, what the walker
//! reports in `sink_impl.rs`.

use core::sync::atomic::Ordering;

use super::batch::FrameBatches;
use super::range::PendingInvalidates;
use super::{
    AsidContext, FlushReport, GatherConfig, GatherState, InFlight, MmuGather, Scope, TableFreeSync,
};
use crate::memory::Memory;
use crate::tlb::TlbBackend;

impl<'a, B: TlbBackend, M: Memory> MmuGather<'a, B, M> {
    /// Starts a gather on the address space `scope` names, with the default
    /// [`GatherConfig`]. `in_flight` is that address space's count.
    pub fn new(scope: Scope, backend: B, memory: M, in_flight: &'a InFlight) -> Self {
        Self::with_config(scope, backend, memory, in_flight, GatherConfig::DEFAULT)
    }

    /// Starts a gather with explicit tunables.
    pub fn with_config(
        scope: Scope,
        backend: B,
        memory: M,
        in_flight: &'a InFlight,
        config: GatherConfig,
    ) -> Self {
        in_flight.count.fetch_add(1, Ordering::SeqCst);
        let limit = match scope {
            Scope::Teardown(_) => 0,
            _ => config.max_invalidates,
        };
        Self {
            backend,
            memory,
            in_flight,
            table_sync: None,
            asid_source: None,
            st: GatherState {
                record: PendingInvalidates::new(limit),
                batches: FrameBatches::new(),
                report: FlushReport::default(),
                scope,
                max_batch_frames: config.max_batch_frames.min(u16::MAX as usize) as u16,
                asid_flush_drops_walk_cache: config.asid_flush_drops_walk_cache,
                global_seen: false,
                published: 0,
                exec_seen: false,
                tables_seen: false,
                tables_pending: false,
                finished: false,
            },
        }
    }

    /// The same gather, calling `sync` after the TLB completion and before any table
    /// memory is handed back (see "Lockless software walkers" in the [module docs](super)).
    /// Without it the gather frees table memory as soon as the hardware can no longer
    /// reach it.
    pub fn with_table_sync(mut self, sync: &'a dyn TableFreeSync) -> Self {
        self.table_sync = Some(sync);
        self
    }

    /// The same gather, reading the ASID to invalidate from `ctx` at every flush instead
    /// of using the number in its [`Scope`] (whose variant still chooses the mode). For an
    /// address space whose ASID an allocator may change while the gather is open: the
    /// flush must name the ASID that entries created up to the unmap may carry, which is
    /// the one assigned when the flush runs (see "ASIDs" in the [module docs](super)). A
    /// context that was never assigned leaves the scope's number in use.
    pub fn with_asid_source(mut self, ctx: &'a AsidContext) -> Self {
        self.asid_source = Some(ctx);
        self
    }

    /// The address space and mode (with the ASID a flush would use now).
    pub fn scope(&self) -> Scope {
        self.current_scope()
    }

    /// The in-flight count this gather is counted in (identifies its address space).
    pub fn in_flight(&self) -> &'a InFlight {
        self.in_flight
    }

    pub(super) fn current_scope(&self) -> Scope {
        let Some(asid) = self.asid_source.and_then(AsidContext::asid) else {
            return self.st.scope;
        };
        match self.st.scope {
            Scope::Asid(_) => Scope::Asid(asid),
            Scope::Teardown(_) => Scope::Teardown(asid),
            Scope::Kernel => Scope::Kernel,
        }
    }

    /// The backend (e.g. to read its counters).
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The memory handle.
    pub fn memory(&self) -> &M {
        &self.memory
    }

    /// By-VA invalidates recorded for the next flush, or `None` if the record overflowed
    /// (the next flush falls back to a whole-ASID / full invalidate).
    pub fn pending_invalidates(&self) -> Option<usize> {
        if self.st.record.overflowed() {
            None
        } else {
            Some(self.st.record.stored())
        }
    }

    /// Frames (mapped ranges and table-memory runs) waiting for the next flush.
    pub fn pending_frames(&self) -> usize {
        self.st.batches.len(&self.memory)
    }

    /// Batch frames borrowed from the allocator and held now.
    pub fn batch_frames_held(&self) -> usize {
        self.st.batches.borrowed()
    }

    /// What the gather has done so far.
    pub fn report(&self) -> FlushReport {
        self.st.report
    }
}

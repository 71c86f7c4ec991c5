//! The sync point before table memory is handed back, for software walkers that read page
//! tables without the address-space lock.
//!
//! See "Lockless software walkers" in the [gather docs](super). The gather calls
//! [`TableFreeSync::sync_before_table_free`] once per flush that is about to hand back
//! table memory: *after* the flush's TLB completion barrier, *before* the first table frame
//! goes to [`crate::Memory::free_frames`]. Flushes that free only mapped pages do not call
//! it (a lockless walker that found a page must pin it by other means, as Linux's
//! `gup_fast` takes a page reference and re-checks the entry).

/// What the kernel supplies so that a table frame is never reused while a lockless
/// software walker may still be reading it.
///
/// When it is called, every table frame about to be freed is already unlinked from its
/// parent entry, and that store is visible to all CPUs (the walkers published it, and the
/// gather issues a full barrier before calling). A walker that starts after the call
/// began therefore cannot reach those frames. The implementation must return only once
/// every walker that may have started *before* has finished: an IPI round to every CPU
/// that could be walking (the walkers run with interrupts off, as Linux's `gup_fast`
/// does), a grace period (RCU-style quiescent states), or per-CPU walk epochs such as
/// [`crate::lockless::WalkEpochs`].
///
/// It must not call back into the gather, and must not wait for the CPU that runs the
/// gather (that CPU is not walking: it is freeing).
pub trait TableFreeSync {
    /// Waits until no software walker can still be inside a table unlinked before this
    /// call.
    fn sync_before_table_free(&self);
}

/// The default: no sync. Right when nothing walks the tables without the address-space
/// lock (the hardware walker is covered by the TLB flush alone). A gather without a sync
/// ([`super::MmuGather::with_table_sync`] never called) behaves exactly like one with this.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoTableSync;

impl TableFreeSync for NoTableSync {
    fn sync_before_table_free(&self) {}
}

impl<T: TableFreeSync + ?Sized> TableFreeSync for &T {
    fn sync_before_table_free(&self) {
        (**self).sync_before_table_free()
    }
}

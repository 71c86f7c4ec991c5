//! A ready-made request slot for a kernel's transport: [`Mailbox`] (post, then each
//! target's IPI handler replays and acknowledges only after its completion barrier) and
//! [`Posted`] (waiting for every acknowledgement). The tests' mutant `ack_early` lives here.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use super::{CpuSet, FlushRequest};
use crate::tlb::TlbBackend;

/// A one-request mailbox with the acknowledgement ordering [`IpiTransport::shootdown`]
/// needs: a kernel's transport posts the request, sends its IPIs and waits; each target's
/// IPI handler calls [`Mailbox::handle`].
///
/// One shootdown at a time: [`Mailbox::post`] spins while another initiator's request is
/// out (keep taking IPIs while it spins, see the module documentation).
///
/// [`IpiTransport::shootdown`]: super::IpiTransport::shootdown
#[derive(Debug)]
pub struct Mailbox {
    busy: AtomicBool,
    /// Targets that have not acknowledged yet.
    pending: AtomicU32,
    request: UnsafeCell<FlushRequest>,
    handled: AtomicU32,
    /// Mutant (tests only): acknowledge before the local replay.
    #[cfg(test)]
    ack_early: bool,
}

// SAFETY: `request` is written only by the holder of `busy` while `pending` is 0 (no
// handler reads it), and read by a handler only while its bit is set in `pending`, which
// the writer sets (release) after the write and waits to see cleared (acquire) before it
// releases `busy`; the handler clears its bit (release) after its last read.
unsafe impl Sync for Mailbox {}

impl Default for Mailbox {
    fn default() -> Self {
        Self::new()
    }
}

/// A posted request; [`Posted::wait`] waits for every acknowledgement.
#[must_use = "a posted request must be waited for before it is reused or anything is freed"]
#[derive(Debug)]
pub struct Posted<'a> {
    mailbox: &'a Mailbox,
}

impl Mailbox {
    /// An empty mailbox.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            busy: AtomicBool::new(false),
            pending: AtomicU32::new(0),
            request: UnsafeCell::new(FlushRequest::new()),
            handled: AtomicU32::new(0),
            #[cfg(test)]
            ack_early: false,
        }
    }

    /// The mutant whose handlers acknowledge before their local replay (tests only).
    #[cfg(test)]
    pub(super) const fn acking_early() -> Self {
        let mut m = Self::new();
        m.ack_early = true;
        m
    }

    /// Puts `request` out for `targets` (send the IPIs after this, then
    /// [`Posted::wait`]).
    pub fn post(&self, targets: CpuSet, request: &FlushRequest) -> Posted<'_> {
        while self
            .busy
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        // SAFETY: we hold `busy` and the previous holder saw `pending` == 0 before it
        // released it: no handler reads the request now (see the `Sync` impl).
        unsafe { *self.request.get() = *request };
        self.pending.store(targets.0, Ordering::Release);
        Posted { mailbox: self }
    }

    /// The IPI handler's part on CPU `cpu`: if a request is out for it, replay it on
    /// `local` ([`FlushRequest::run_local`], barrier included), *then* acknowledge.
    /// Returns whether there was one (false for a spurious or repeated IPI).
    pub fn handle<B: TlbBackend + ?Sized>(&self, cpu: usize, local: &mut B) -> bool {
        let Ok(bit) = CpuSet::single(cpu) else {
            return false;
        };
        if self.pending.load(Ordering::Acquire) & bit.0 == 0 {
            return false;
        }
        // SAFETY: our bit is set, so the request was written before (acquire above) and
        // will not be rewritten until we clear it (see the `Sync` impl).
        let request = unsafe { &*self.request.get() };
        #[cfg(test)]
        if self.ack_early {
            // The bug: the initiator may go on (and free) while we still invalidate. The
            // copy keeps the mutant itself free of data races.
            let copy = *request;
            self.pending.fetch_and(!bit.0, Ordering::Release);
            copy.run_local(local);
            self.handled.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        request.run_local(local);
        self.handled.fetch_add(1, Ordering::Relaxed);
        // The acknowledgement: after the local completion barrier, and after our last
        // read of the request.
        self.pending.fetch_and(!bit.0, Ordering::Release);
        true
    }

    /// Requests handled so far (all CPUs).
    #[must_use]
    pub fn handled(&self) -> u32 {
        self.handled.load(Ordering::Relaxed)
    }

    /// The targets that have not acknowledged yet.
    #[must_use]
    pub fn pending(&self) -> CpuSet {
        CpuSet(self.pending.load(Ordering::Acquire))
    }
}

impl Posted<'_> {
    /// Spins until every target acknowledged; the mailbox is free again when it returns.
    /// (Dropping a `Posted` waits the same way.)
    pub fn wait(self) {
        drop(self);
    }
}

impl Drop for Posted<'_> {
    fn drop(&mut self) {
        while self.mailbox.pending.load(Ordering::Acquire) != 0 {
            core::hint::spin_loop();
        }
        self.mailbox.busy.store(false, Ordering::Release);
    }
}

//! Observing a backend's completions in one line: [`Observed`] wraps any [`TlbBackend`]
//! and calls a closure after every [`TlbBackend::complete`], with what that batch issued.
//!
//! A kernel that wants to know when invalidates have taken effect (to account for them,
//! trace them, or check from its `Memory` callbacks that a frame is handed back only after
//! a completion) wraps its backend instead of writing a forwarding backend:
//!
//! ```
//! use armv7_mm::tlb::{Armv7Tlb, Insn, InsnSink, Observed, Shareability};
//! use armv7_mm::{Asid, TlbBackend, VirtAddr};
//!
//! # struct Discard;
//! # impl InsnSink for Discard { fn issue(&mut self, _: Insn) {} }
//! let backend = Armv7Tlb::new(Discard, Shareability::Local); // on ARM: Cp15Tlb::detect()
//! let mut completions = 0;
//! let mut tlb = Observed::new(backend, |batch| {
//!     completions += 1;
//!     assert_eq!(batch.va, 1);
//! });
//! tlb.prepare();
//! tlb.invalidate_va(VirtAddr::new(0x1000), Asid(1));
//! tlb.complete();
//! drop(tlb);
//! assert_eq!(completions, 1);
//! ```
//!
//! (`Discard` stands in for the CP15 instruction sink on the host.)

use super::{Asid, TlbBackend, TlbCounters};
use crate::addr::VirtAddr;

/// A [`TlbBackend`] that forwards everything to `B` and, after each
/// [`complete`](TlbBackend::complete) has returned, calls `F` with the counts of the batch
/// it completed (everything `B` issued since the previous completion, barriers included).
/// [`TlbBackend::counters`] stays `B`'s own totals.
pub struct Observed<B: TlbBackend, F: FnMut(&TlbCounters)> {
    inner: B,
    on_complete: F,
    /// `inner`'s counters at the last completion.
    last: TlbCounters,
}

impl<B: TlbBackend, F: FnMut(&TlbCounters)> Observed<B, F> {
    /// Wraps `inner`; `on_complete` runs after each completion.
    pub fn new(inner: B, on_complete: F) -> Self {
        let last = inner.counters();
        Observed {
            inner,
            on_complete,
            last,
        }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// The wrapped backend, mutably.
    pub fn inner_mut(&mut self) -> &mut B {
        &mut self.inner
    }

    /// Unwraps the backend (dropping the closure).
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B: TlbBackend, F: FnMut(&TlbCounters)> TlbBackend for Observed<B, F> {
    fn prepare(&mut self) {
        self.inner.prepare();
    }
    fn invalidate_va(&mut self, va: VirtAddr, asid: Asid) {
        self.inner.invalidate_va(va, asid);
    }
    fn invalidate_va_all_asids(&mut self, va: VirtAddr) {
        self.inner.invalidate_va_all_asids(va);
    }
    fn invalidate_asid(&mut self, asid: Asid) {
        self.inner.invalidate_asid(asid);
    }
    fn invalidate_all(&mut self) {
        self.inner.invalidate_all();
    }
    fn invalidate_branch_predictor(&mut self) {
        self.inner.invalidate_branch_predictor();
    }
    fn complete(&mut self) {
        self.inner.complete();
        let now = self.inner.counters();
        let batch = now.since(&self.last);
        self.last = now;
        (self.on_complete)(&batch);
    }
    fn counters(&self) -> TlbCounters {
        self.inner.counters()
    }
}

#[cfg(test)]
mod tests {
    use core::cell::{Cell, RefCell};
    use std::vec::Vec;

    use super::*;
    use crate::gather::{InFlight, MmuGather, Scope};
    use crate::short::host::HostMemory;
    use crate::short::{AddressSpace, Attributes, Features, Layout};
    use crate::tlb::armv7::Recorder;
    use crate::tlb::{Armv7Tlb, Insn, Shareability};
    use crate::{MapSize, PhysAddr, VirtRange};

    /// A backend that remembers whether its own `complete` has run, so the observer can
    /// check it is called after it, never before.
    struct Flagging<'a> {
        tlb: Armv7Tlb<Recorder>,
        completed: &'a Cell<u32>,
    }

    impl TlbBackend for Flagging<'_> {
        fn prepare(&mut self) {
            self.tlb.prepare()
        }
        fn invalidate_va(&mut self, va: VirtAddr, asid: Asid) {
            self.tlb.invalidate_va(va, asid)
        }
        fn invalidate_va_all_asids(&mut self, va: VirtAddr) {
            self.tlb.invalidate_va_all_asids(va)
        }
        fn invalidate_asid(&mut self, asid: Asid) {
            self.tlb.invalidate_asid(asid)
        }
        fn invalidate_all(&mut self) {
            self.tlb.invalidate_all()
        }
        fn invalidate_branch_predictor(&mut self) {
            self.tlb.invalidate_branch_predictor()
        }
        fn complete(&mut self) {
            self.tlb.complete();
            self.completed.set(self.completed.get() + 1);
        }
        fn counters(&self) -> TlbCounters {
            self.tlb.counters()
        }
    }

    #[test]
    fn a_gather_through_an_observed_backend_reports_each_completion_after_it() {
        let completed = Cell::new(0);
        let seen: RefCell<Vec<TlbCounters>> = RefCell::new(Vec::new());
        let inner = Flagging {
            tlb: Armv7Tlb::new(Recorder::default(), Shareability::Local),
            completed: &completed,
        };
        let mut tlb = Observed::new(inner, |batch| {
            assert_eq!(
                completed.get() as usize,
                seen.borrow().len() + 1,
                "observer called after the backend's completion, once per completion"
            );
            seen.borrow_mut().push(*batch);
        });

        let mem = HostMemory::new();
        let mut space =
            AddressSpace::new(mem.clone(), Layout::User { n: 2 }, Features::ALL).unwrap();
        let range = VirtRange::from_start_len(VirtAddr::new(0x1000_0000), 3 * 4096).unwrap();
        space
            .map(
                range,
                PhysAddr::new(0x8000_0000),
                Attributes::USER_DATA,
                MapSize::Page4K,
            )
            .unwrap();
        let in_flight = InFlight::new();
        let mut gather = MmuGather::new(Scope::Asid(Asid(3)), &mut tlb, mem, &in_flight);
        space.unmap(range, &mut gather).unwrap();
        let report = gather.finish();
        assert_eq!(report.completions, 1);
        {
            let seen = seen.borrow();
            assert_eq!(seen.len(), 1);
            assert_eq!(seen[0].va, 3, "three pages invalidated by VA in that batch");
            assert_eq!((seen[0].prepares, seen[0].completions), (1, 1));
        }
        // A second batch reports only its own work; the totals stay the backend's.
        tlb.prepare();
        tlb.invalidate_asid(Asid(3));
        tlb.complete();
        assert_eq!(seen.borrow()[1].asid, 1);
        assert_eq!(seen.borrow()[1].va, 0);
        assert_eq!(tlb.counters().va, 3);
        let inner = tlb.into_inner();
        assert_eq!(inner.tlb.sink().log.last(), Some(&Insn::Isb));
    }
}

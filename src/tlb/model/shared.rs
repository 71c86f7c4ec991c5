//! Sharing the model between the code under test and the test: [`SharedTlbModel`] (one
//! model as a [`TlbBackend`] and as the test's view) and [`FreeChecker`] (a [`Memory`]
//! wrapper that checks every free against the model).

use core::cell::{Ref, RefCell, RefMut};
use core::ptr::NonNull;
use std::rc::Rc;
use std::vec::Vec;

use super::{StaleTranslation, TlbModel};
use crate::addr::{PhysAddr, VirtAddr, PAGE_SIZE};
use crate::memory::{MappedRun, Memory};
use crate::tlb::{Asid, TlbBackend, TlbCounters};

/// A [`TlbModel`] shared between the code under test (as its [`TlbBackend`]) and the test
/// (which plays the CPU and checks frees, e.g. through a [`FreeChecker`]).
#[derive(Clone, Debug, Default)]
pub struct SharedTlbModel(Rc<RefCell<TlbModel>>);

impl SharedTlbModel {
    /// A new, empty shared model.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Borrows the model.
    ///
    /// # Panics
    /// If it is mutably borrowed (test code only: a borrow held across a backend call).
    #[must_use]
    pub fn borrow(&self) -> Ref<'_, TlbModel> {
        self.0.borrow()
    }

    /// Borrows the model mutably.
    ///
    /// # Panics
    /// If it is borrowed (test code only).
    #[must_use]
    pub fn borrow_mut(&self) -> RefMut<'_, TlbModel> {
        self.0.borrow_mut()
    }
}

impl TlbBackend for SharedTlbModel {
    fn prepare(&mut self) {
        self.0.borrow_mut().prepare()
    }
    fn invalidate_va(&mut self, va: VirtAddr, asid: Asid) {
        self.0.borrow_mut().invalidate_va(va, asid)
    }
    fn invalidate_va_all_asids(&mut self, va: VirtAddr) {
        self.0.borrow_mut().invalidate_va_all_asids(va)
    }
    fn invalidate_asid(&mut self, asid: Asid) {
        self.0.borrow_mut().invalidate_asid(asid)
    }
    fn invalidate_all(&mut self) {
        self.0.borrow_mut().invalidate_all()
    }
    fn invalidate_branch_predictor(&mut self) {
        self.0.borrow_mut().invalidate_branch_predictor()
    }
    fn complete(&mut self) {
        self.0.borrow_mut().complete()
    }
    fn counters(&self) -> TlbCounters {
        self.0.borrow().counters()
    }
}

/// A [`Memory`] wrapper that runs [`TlbModel::check_freed`] on every frame range handed
/// back (`free_frames` and `release_mapped`) before passing it on, and records every stale
/// translation found.
#[derive(Debug)]
pub struct FreeChecker<M: Memory> {
    inner: M,
    tlb: SharedTlbModel,
    violations: Vec<StaleTranslation>,
}

impl<M: Memory> FreeChecker<M> {
    /// Wraps `inner`, checking against `tlb`.
    pub fn new(inner: M, tlb: SharedTlbModel) -> Self {
        Self {
            inner,
            tlb,
            violations: Vec::new(),
        }
    }

    /// Every stale translation found so far, in the order of the frees.
    #[must_use]
    pub fn violations(&self) -> &[StaleTranslation] {
        &self.violations
    }

    /// The wrapped memory.
    #[must_use]
    pub fn inner(&self) -> &M {
        &self.inner
    }

    /// The wrapped memory, mutably.
    pub fn inner_mut(&mut self) -> &mut M {
        &mut self.inner
    }

    fn check(&mut self, pa: PhysAddr, frames: usize) {
        let tlb = self.tlb.borrow();
        self.violations.extend(tlb.stale_entries(pa, frames));
    }
}

// SAFETY: allocation and `phys_to_virt` are forwarded to `M`, which upholds the contract;
// the checker only inspects frees.
unsafe impl<M: Memory> Memory for FreeChecker<M> {
    fn allocate_frames(&mut self, count: usize, align: usize) -> Option<PhysAddr> {
        self.inner.allocate_frames(count, align)
    }

    fn free_frames(&mut self, pa: PhysAddr, count: usize) {
        self.check(pa, count);
        self.inner.free_frames(pa, count)
    }

    fn phys_to_virt(&self, pa: PhysAddr) -> NonNull<u8> {
        self.inner.phys_to_virt(pa)
    }

    fn free_table_frames(&mut self, pa: PhysAddr, count: usize) {
        self.check(pa, count);
        self.inner.free_table_frames(pa, count);
    }

    fn release_mapped(&mut self, va: VirtAddr, pa: PhysAddr, bytes: usize) {
        self.check(pa, bytes.div_ceil(PAGE_SIZE as usize));
        self.inner.release_mapped(va, pa, bytes)
    }

    fn release_mapped_run(&mut self, run: MappedRun) {
        self.check(run.pa, run.bytes().div_ceil(u64::from(PAGE_SIZE)) as usize);
        self.inner.release_mapped_run(run)
    }
}

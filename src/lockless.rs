//! Software walks of short-descriptor tables without the address-space lock, and the
//! per-CPU walk epochs that make them safe against table freeing.
//!
//! # The hazard
//!
//! A lockless walker reads an L1 entry, finds an L2 table there, and then reads the L2
//! entry. Between the two reads another CPU may unlink that table (under the lock), flush
//! the TLBs and free the frame, and someone else may reuse it: the walker then interprets
//! foreign data as descriptors. The TLB flush does not help: it waits for the hardware
//! walkers, not for software ones.
//!
//! # The protocol
//!
//! - A walker runs inside a *walk section*: [`WalkEpochs::enter`] before it reads the first
//!   entry, the returned [`WalkGuard`] dropped after the last. At most one section per CPU
//!   at a time, and short (no sleeping inside).
//! - Every gather that may free table memory of the address space is given the epochs as
//!   its [`TableFreeSync`] (see "Lockless software walkers" in [`crate::gather`]). Before
//!   it hands table memory back, after the TLB flush completed, it waits until every CPU
//!   that was inside a section when it looked has left that section.
//!
//! Why that suffices: the table was unlinked (its parent entry cleared) before the sync,
//! and a full barrier separates the unlinking store from the sync's reads of the epochs.
//! A walker that enters after the sync read its epoch increments the epoch before its
//! first table read (a full barrier in between too), so it sees the cleared parent entry
//! and never reaches the table; a walker that entered before is waited for. This is the
//! same argument as an RCU grace period (and as Linux's IPI round, which works because
//! `gup_fast` runs with interrupts off).
//!
//! [`crate::locked::LockedAddressSpace`] ties it together: its gathers carry the sync, and
//! its [`translate_lockless`](crate::locked::LockedAddressSpace::translate_lockless)
//! accepts only a guard of the same epochs.
//!
//! # Cost
//!
//! A walker pays two atomic increments per walk. The sync reads one word per CPU and
//! spins only on CPUs that are inside a section at that moment; it runs once per flush
//! that frees table memory, never for pages.

use core::ptr::NonNull;
use core::sync::atomic::{fence, AtomicU32, Ordering};

use crate::addr::{PhysAddr, VirtAddr, PAGE_SIZE};
use crate::gather::TableFreeSync;
use crate::memory::Memory;
use crate::short::{L1Desc, L1Kind, L2Desc, L2Kind, Layout};
use crate::sink::MapSize;

/// Per-CPU walk epochs: odd while that CPU is inside a walk section.
///
/// `CPUS` is the most CPUs that may walk. Keep one per kernel (or per address space) in a
/// `static`; it is the [`TableFreeSync`] of every gather on address spaces walked under
/// it.
#[derive(Debug)]
pub struct WalkEpochs<const CPUS: usize> {
    epochs: [AtomicU32; CPUS],
}

/// Why [`WalkEpochs::enter`] refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum WalkError {
    /// The CPU number is not below `CPUS`.
    NoSuchCpu(usize),
    /// This CPU is already inside a walk section (sections do not nest).
    Nested(usize),
}

/// Proof that this CPU is inside a walk section; leaving the section is dropping it.
#[derive(Debug)]
#[must_use = "the walk section ends when the guard is dropped"]
pub struct WalkGuard<'a> {
    slot: &'a AtomicU32,
    /// The epochs the guard belongs to (compared by address).
    owner: *const (),
}

impl<const CPUS: usize> Default for WalkEpochs<CPUS> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const CPUS: usize> WalkEpochs<CPUS> {
    /// No CPU inside a walk.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            epochs: [const { AtomicU32::new(0) }; CPUS],
        }
    }

    /// CPU `cpu` starts a walk section. Tables reachable from entries it reads before it
    /// drops the guard are not freed meanwhile (by gathers synced with these epochs).
    ///
    /// # Errors
    /// [`WalkError::NoSuchCpu`] for `cpu >= CPUS`; [`WalkError::Nested`] if `cpu` is
    /// already inside a section.
    pub fn enter(&self, cpu: usize) -> Result<WalkGuard<'_>, WalkError> {
        let slot = self.epochs.get(cpu).ok_or(WalkError::NoSuchCpu(cpu))?;
        let e = slot.load(Ordering::Relaxed);
        if e & 1 == 1 {
            return Err(WalkError::Nested(cpu));
        }
        // Another user of the same CPU number between the load and here: refuse too.
        slot.compare_exchange(e, e.wrapping_add(1), Ordering::SeqCst, Ordering::Relaxed)
            .map_err(|_| WalkError::Nested(cpu))?;
        // The odd epoch is visible before any table read of the section.
        fence(Ordering::SeqCst);
        Ok(WalkGuard {
            slot,
            owner: self.id(),
        })
    }

    /// CPUs inside a walk section right now.
    #[must_use]
    pub fn walkers(&self) -> usize {
        self.epochs
            .iter()
            .filter(|e| e.load(Ordering::SeqCst) & 1 == 1)
            .count()
    }

    /// Waits until every CPU that is inside a walk section now has left it. Returns how
    /// many CPUs it had to wait for.
    pub fn synchronize(&self) -> usize {
        // Stores made before (the unlinking of tables) are ordered before the epoch reads.
        fence(Ordering::SeqCst);
        let mut waited = 0;
        for slot in &self.epochs {
            let e = slot.load(Ordering::SeqCst);
            if e & 1 == 1 {
                waited += 1;
                while slot.load(Ordering::SeqCst) == e {
                    core::hint::spin_loop();
                }
            }
        }
        fence(Ordering::SeqCst);
        waited
    }

    pub(crate) fn id(&self) -> *const () {
        (self as *const Self).cast()
    }
}

impl WalkGuard<'_> {
    /// Whether this guard was made by `epochs`.
    #[must_use]
    pub fn is_from<const CPUS: usize>(&self, epochs: &WalkEpochs<CPUS>) -> bool {
        core::ptr::eq(self.owner, epochs.id())
    }

    pub(crate) fn owner(&self) -> *const () {
        self.owner
    }
}

impl Drop for WalkGuard<'_> {
    fn drop(&mut self) {
        // Every table read of the section happens before the even epoch is seen.
        self.slot.fetch_add(1, Ordering::Release);
    }
}

impl<const CPUS: usize> TableFreeSync for WalkEpochs<CPUS> {
    fn sync_before_table_free(&self) {
        self.synchronize();
    }
}

/// What a lockless walk found for a VA.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct LocklessLeaf {
    /// The physical address the VA translates to.
    pub pa: PhysAddr,
    /// Size of the mapping that holds it.
    pub size: MapSize,
    /// The L2 table the walk went through (`None` for a section or supersection).
    pub table: Option<PhysAddr>,
}

/// Where an L1 table lives, for walks that do not hold the address space.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TableView {
    /// Each 4 KiB frame of the L1 table (unused slots repeat frame 0).
    l1: [NonNull<u32>; 4],
    layout: Layout,
    pxn: bool,
}

// SAFETY: the pointers are only read (volatile) under the walk protocol; they refer to the
// L1 table, which lives as long as the address space that made the view.
unsafe impl Send for TableView {}
// SAFETY: as above; reads only.
unsafe impl Sync for TableView {}

impl TableView {
    /// The view of the L1 table at `root` (as allocated by `AddressSpace::new` for
    /// `layout`), reached through `mem`.
    pub(crate) fn new<M: Memory>(root: PhysAddr, layout: Layout, pxn: bool, mem: &M) -> Self {
        let first = mem.phys_to_virt(root).cast::<u32>();
        let mut l1 = [first; 4];
        let (_, hi) = layout.bounds();
        let frames = ((hi >> 20) as usize).div_ceil(1024).clamp(1, 4);
        for (f, slot) in l1.iter_mut().enumerate().take(frames) {
            *slot = mem
                .phys_to_virt(PhysAddr::new(root.as_u64() + (f as u64) * PAGE_SIZE as u64))
                .cast::<u32>();
        }
        Self { l1, layout, pxn }
    }

    /// Walks `va`, calling `between` after the L1 read and before the L2 read.
    ///
    /// # Safety
    /// The L1 table must be live, and no L2 table reachable from an L1 entry read here may
    /// be freed before this returns (the caller is inside a walk section whose epochs
    /// every gather of the address space syncs with).
    pub(crate) unsafe fn walk<M: Memory>(
        &self,
        va: VirtAddr,
        mem: &M,
        between: &mut dyn FnMut(),
    ) -> Option<LocklessLeaf> {
        let (lo, hi) = self.layout.bounds();
        let v = va.as_u64();
        if v < lo || v >= hi {
            return None;
        }
        let idx = va.l1_index();
        let p = self.l1[idx / 1024].as_ptr();
        // SAFETY: `idx % 1024` is inside the frame, which is part of the live L1 table
        // (the caller's contract); one aligned word, read volatile because other CPUs and
        // the hardware share the table.
        let raw = unsafe { p.add(idx % 1024).read_volatile() };
        match L1Desc::from_bits_retain(raw).kind(self.pxn) {
            L1Kind::Fault => None,
            L1Kind::Section { pa, .. } => Some(LocklessLeaf {
                pa: PhysAddr::new(u64::from(pa) + (v & 0xf_ffff)),
                size: MapSize::Section1M,
                table: None,
            }),
            L1Kind::Supersection { pa, .. } => Some(LocklessLeaf {
                pa: PhysAddr::new(pa + (v & 0xff_ffff)),
                size: MapSize::Super16M,
                table: None,
            }),
            L1Kind::Table { pa: table, pxn } => {
                between();
                let frame = PhysAddr::new(u64::from(table & !0xfff));
                let base = mem.phys_to_virt(frame).cast::<u32>().as_ptr();
                let word = (table as usize & 0xfff) / 4 + va.l2_index();
                // SAFETY: the table was linked when the L1 entry was read, inside the
                // caller's walk section, so its frame is not freed yet (the caller's
                // contract); `word < 1024` stays inside the frame.
                let raw2 = unsafe { base.add(word).read_volatile() };
                let (pa, size) = match L2Desc::from_bits_retain(raw2).kind(pxn) {
                    L2Kind::Fault => return None,
                    L2Kind::Small { pa, .. } => (u64::from(pa) + (v & 0xfff), MapSize::Page4K),
                    L2Kind::Large { pa, .. } => (u64::from(pa) + (v & 0xffff), MapSize::Large64K),
                };
                Some(LocklessLeaf {
                    pa: PhysAddr::new(pa),
                    size,
                    table: Some(PhysAddr::new(u64::from(table))),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::thread;
    use std::time::Duration;

    #[test]
    fn enter_refuses_bad_cpu_and_nesting() {
        let e = WalkEpochs::<2>::new();
        assert_eq!(e.enter(2).unwrap_err(), WalkError::NoSuchCpu(2));
        let g = e.enter(1).unwrap();
        assert!(g.is_from(&e));
        assert_eq!(e.enter(1).unwrap_err(), WalkError::Nested(1));
        assert_eq!(e.walkers(), 1);
        drop(g);
        assert_eq!(e.walkers(), 0);
        let _again = e.enter(1).unwrap();
        let other = WalkEpochs::<2>::new();
        assert!(!_again.is_from(&other));
    }

    #[test]
    fn sync_without_walkers_returns_at_once() {
        let e = WalkEpochs::<4>::new();
        assert_eq!(e.synchronize(), 0);
    }

    #[test]
    fn sync_waits_for_a_walker_inside() {
        let e = Arc::new(WalkEpochs::<2>::new());
        let inside = Arc::new(AtomicBool::new(false));
        let left = Arc::new(AtomicBool::new(false));
        let (e2, in2, left2) = (e.clone(), inside.clone(), left.clone());
        let t = thread::spawn(move || {
            let g = e2.enter(1).unwrap();
            in2.store(true, Ordering::SeqCst);
            thread::sleep(Duration::from_millis(50));
            left2.store(true, Ordering::SeqCst);
            drop(g);
        });
        while !inside.load(Ordering::SeqCst) {
            thread::yield_now();
        }
        assert_eq!(e.synchronize(), 1);
        assert!(
            left.load(Ordering::SeqCst),
            "sync returned while the walker was still inside"
        );
        t.join().unwrap();
    }

    #[test]
    fn sync_does_not_wait_for_walkers_that_start_later() {
        // A walker that keeps entering and leaving never blocks a sync for long: the sync
        // waits only for the section it saw, not for later ones.
        let e = Arc::new(WalkEpochs::<2>::new());
        let stop = Arc::new(AtomicBool::new(false));
        let (e2, stop2) = (e.clone(), stop.clone());
        let t = thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let _g = e2.enter(0).unwrap();
                core::hint::spin_loop();
            }
        });
        for _ in 0..1000 {
            e.synchronize();
        }
        stop.store(true, Ordering::Relaxed);
        t.join().unwrap();
    }
}

//! Software walks of page tables (either descriptor format) without the address-space
//! lock, and the per-CPU walk epochs that make them safe against table freeing.
//!
//! # The hazard
//!
//! A lockless walker reads a root entry, finds a table there, and then reads that table's
//! entry (and so on down the levels). Between two reads another CPU may unlink that table (under the lock), flush
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

use crate::addr::{PhysAddr, VirtAddr};
use crate::gather::TableFreeSync;
use crate::memory::Memory;
use crate::sink::MapSize;
use crate::table::attrs::Attributes;
use crate::table::error::OutOfRange;
use crate::table::{AddressSpace, Format, Kind, RootShape, Word};

/// Bytes of a table frame.
const PAGE_SIZE: usize = crate::addr::PAGE_SIZE as usize;

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

/// What a lockless walk found for a VA: enough for a `get_user_pages_fast`-style caller
/// to check the access it wants, pin the page, then re-read the entry and compare.
///
/// # What the walk epochs protect, and what they do not
///
/// They keep every *table* the walk went through from being freed (and reused) until the
/// walk section ends, so the entries read are descriptors of this space, never foreign
/// data. They do **not** keep the *data page* mapped: once the section ends (or even
/// during it) another CPU may unmap the page, and its frame goes back to the allocator
/// after the gather's flush, which does not wait for software walkers. A caller that
/// uses the page after the walk must pin it (take a reference the kernel's frame
/// allocator honours) and then re-read the entry ([`LocklessLeaf::raw`] compared with a
/// second walk, still inside a section): if it changed, unpin and retry, as Linux's
/// `gup_fast` does.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct LocklessLeaf {
    /// The physical address the VA translates to.
    pub pa: PhysAddr,
    /// Size of the mapping that holds it.
    pub size: MapSize,
    /// The table below the root that holds the leaf (short descriptors: the L2 table;
    /// long descriptors: the level-2 or level-3 table), `None` for a leaf in the root
    /// table (a short section or supersection, a long-descriptor block in the root).
    pub table: Option<PhysAddr>,
    /// Permissions, memory type, shareability and global-ness, decoded as the hardware
    /// walker would (short-descriptor pages: `execute` includes the L2 table's PXN).
    pub attrs: Attributes,
    /// The leaf descriptor as read (for a replicated leaf, the copy this VA indexes; all
    /// 16 are identical), zero-extended for short descriptors: for the re-check after
    /// pinning.
    pub raw: u64,
}

/// Where a root table lives, for walks that do not hold the address space.
pub(crate) struct TableView<F: Format> {
    /// Each 4 KiB frame of the root table (unused slots repeat frame 0).
    root: [NonNull<u8>; 4],
    shape: RootShape,
    bounds: (u64, u64),
    features: F::Features,
}

impl<F: Format> Clone for TableView<F> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<F: Format> Copy for TableView<F> {}

// SAFETY: the pointers are only read (single-copy atomic loads) under the walk protocol;
// they refer to the root table, which lives as long as the address space that made the
// view. The format's features are plain data.
unsafe impl<F: Format> Send for TableView<F> {}
// SAFETY: as above; reads only.
unsafe impl<F: Format> Sync for TableView<F> {}

/// Reads one descriptor that another CPU may be writing (under the lock) with one
/// single-copy-atomic load: the old or the new value, never a mix.
///
/// # Safety
/// `p` is an aligned descriptor of a live table.
#[inline(always)]
unsafe fn load_shared<W: Word>(p: *const W) -> W {
    if W::BYTES == 8 {
        let p = p.cast::<u64>();
        #[cfg(target_arch = "arm")]
        // SAFETY: the caller's contract; `ldrd` of an 8-byte-aligned descriptor is
        // single-copy atomic with LPAE.
        let v = unsafe { crate::arch::lpae::load_descriptor(p) };
        #[cfg(not(target_arch = "arm"))]
        // SAFETY: the caller's contract; an aligned 64-bit load is one access on the
        // 64-bit hosts the crate is tested on.
        let v = unsafe { p.read_volatile() };
        W::from_u64(v)
    } else {
        // SAFETY: the caller's contract; an aligned 32-bit load is single-copy atomic.
        W::from_u64(u64::from(unsafe { p.cast::<u32>().read_volatile() }))
    }
}

impl<F: Format> TableView<F> {
    /// The view of the root table of `space`.
    pub(crate) fn new<M: Memory>(space: &AddressSpace<F, M>) -> Self {
        let layout = space.layout();
        let shape = F::root(layout);
        let root = space.root();
        let mem = space.memory();
        let first = mem.phys_to_virt(root);
        let mut frames = [first; 4];
        for (f, slot) in frames.iter_mut().enumerate().take(shape.frames) {
            *slot = mem.phys_to_virt(PhysAddr::new(root.as_u64() + (f * PAGE_SIZE) as u64));
        }
        Self {
            root: frames,
            shape,
            bounds: layout.bounds(),
            features: space.features(),
        }
    }

    /// Walks `va`, calling `between` after each table entry is read and before the next
    /// level's table is (once per table below the root the walk enters).
    ///
    /// # Errors
    /// [`OutOfRange`] for a VA in the other half of a split.
    ///
    /// # Safety
    /// The root table must be live, and no table reachable from an entry read here may
    /// be freed before this returns (the caller is inside a walk section whose epochs
    /// every gather of the address space syncs with).
    pub(crate) unsafe fn walk<M: Memory>(
        &self,
        va: VirtAddr,
        mem: &M,
        between: &mut dyn FnMut(),
    ) -> Result<Option<LocklessLeaf>, OutOfRange> {
        let (lo, hi) = self.bounds;
        let v = va.as_u64();
        if v < lo || v >= hi {
            return Err(OutOfRange {
                va,
                bounds: self.bounds,
            });
        }
        let mut level = self.shape.level;
        let idx = (v >> F::SHIFT[level as usize]) as usize & (self.shape.entries - 1);
        let byte = idx * F::Word::BYTES;
        let frame = self.root[byte / PAGE_SIZE].as_ptr();
        // SAFETY: `byte % PAGE_SIZE` is inside the frame, which is part of the live root
        // table (the caller's contract); the descriptor is aligned.
        let mut raw =
            unsafe { load_shared(frame.add(byte % PAGE_SIZE).cast::<F::Word>().cast_const()) };
        let mut table = None;
        let mut ctx = F::ROOT_CTX;
        loop {
            match F::kind(&self.features, level, raw) {
                Kind::Invalid => return Ok(None),
                Kind::Leaf(size) => {
                    let off = v & (size.bytes() - 1);
                    return Ok(Some(LocklessLeaf {
                        pa: PhysAddr::new(F::leaf_pa(raw, size) + off),
                        size,
                        table,
                        attrs: F::leaf_attrs(raw, size, ctx),
                        raw: raw.to_u64(),
                    }));
                }
                Kind::Table if level >= F::LAST_LEVEL => return Ok(None),
                Kind::Table => {
                    between();
                    ctx = F::table_ctx(raw);
                    let pa = F::table_pa(raw);
                    level += 1;
                    let frame = PhysAddr::new(pa & !(PAGE_SIZE as u64 - 1));
                    let base = mem.phys_to_virt(frame).as_ptr();
                    let idx =
                        (v >> F::SHIFT[level as usize]) as usize & (F::ENTRIES[level as usize] - 1);
                    let byte = (pa as usize & (PAGE_SIZE - 1)) + idx * F::Word::BYTES;
                    // SAFETY: the table was linked when its parent entry was read, inside
                    // the caller's walk section, so its frame is not freed yet (the
                    // caller's contract); the table lies inside its frame, so `byte` does.
                    raw = unsafe { load_shared(base.add(byte).cast::<F::Word>().cast_const()) };
                    table = Some(PhysAddr::new(pa));
                }
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

    fn rich_leaf<F: crate::table::tests::TestFormat>() {
        use crate::short::host::HostMemory;
        use crate::table::attrs::{Access, Execute};
        use crate::table::Layout;
        let mem = HostMemory::new();
        let mut space =
            AddressSpace::<F, _>::new(mem.clone(), Layout::User { n: 1 }, F::ALL).unwrap();
        let attrs = Attributes {
            access: Access::UserRo,
            execute: Execute::UserOnly,
            ..Attributes::USER_DATA
        };
        let va = VirtAddr::new(0x1000_3000);
        let r = crate::addr::VirtRange::from_start_len(va, 4096).unwrap();
        space
            .map(r, PhysAddr::new(0x7000_0000), attrs, MapSize::Page4K)
            .unwrap();
        let view = TableView::new(&space);
        // SAFETY: the space is alive and nothing frees its tables during the walks.
        let leaf = unsafe { view.walk(VirtAddr::new(0x1000_3010), &mem, &mut || {}) }
            .unwrap()
            .unwrap();
        let t = space.translate(va).unwrap();
        assert_eq!(leaf.pa, PhysAddr::new(0x7000_0010));
        assert_eq!(leaf.attrs, t.mapping.attrs);
        assert_eq!(leaf.attrs, attrs);
        let p = space.entry_ptr_for_test(va).unwrap();
        // SAFETY: an entry of the live table.
        let raw = unsafe { F::Word::load(p.as_ptr()) }.to_u64();
        assert_eq!(leaf.raw, raw);
        // The other half of the split is not a translation fault.
        let kernel = VirtAddr::new(0x8000_0000);
        // SAFETY: as above.
        let e = unsafe { view.walk(kernel, &mem, &mut || {}) }.unwrap_err();
        assert_eq!(e.va, kernel);
        assert_eq!(e.bounds, (0, 0x8000_0000));
        // SAFETY: as above.
        let none = unsafe { view.walk(VirtAddr::new(0x1000_4000), &mem, &mut || {}) };
        assert_eq!(none, Ok(None));
    }

    #[test]
    fn lockless_leaf_carries_attributes_and_the_raw_descriptor() {
        rich_leaf::<crate::short::Short>();
        rich_leaf::<crate::lpae::Lpae>();
    }

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

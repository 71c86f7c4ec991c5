//! The kernel's memory model, as the crate sees it.
//!
//! The crate never owns physical memory and keeps no global state. Everything it needs
//! from the kernel comes through [`Memory`]: frames for page tables (and for the gather's
//! overflow batches), the way back for frames the crate is done with, and how to reach a
//! table's physical address through a pointer.
//!
//! A `Memory` value is typically a cheap handle (a zero-sized type over the kernel's global
//! allocator, or a reference); an address space and a gather may each hold one.

use core::ptr::NonNull;

use crate::addr::{PhysAddr, VirtAddr, PAGE_SIZE};
use crate::sink::MapSize;

/// Mapped leaves of one size that were virtually *and* physically consecutive, handed back
/// together ([`Memory::release_mapped_run`]): leaf `i` was mapped at `va + i * size` to
/// `pa + i * size`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MappedRun {
    /// VA the first leaf was mapped at.
    pub va: VirtAddr,
    /// First PA of the first leaf.
    pub pa: PhysAddr,
    /// Size of every leaf.
    pub size: MapSize,
    /// Number of leaves (at least 1).
    pub count: u32,
}

impl MappedRun {
    /// Bytes the run covers.
    #[must_use]
    pub const fn bytes(&self) -> u64 {
        self.size.bytes() * self.count as u64
    }

    /// Each leaf: (VA it was mapped at, its first PA).
    pub fn leaves(&self) -> impl Iterator<Item = (VirtAddr, PhysAddr)> {
        let bytes = self.size.bytes();
        let (va, pa) = (self.va.as_u32(), self.pa.as_u64());
        // An add per leaf, not a multiply: this is the free loop of every unmap. The VA of
        // a run that ends at 4 GiB wraps only after its last leaf.
        (0..self.count).scan((va, pa), move |at, _| {
            let here = *at;
            *at = (
                here.0.wrapping_add(bytes as u32),
                here.1.wrapping_add(bytes),
            );
            Some((VirtAddr::new(here.0), PhysAddr::new(here.1)))
        })
    }
}

/// What the kernel provides: frame allocation and the physical-to-virtual mapping of table
/// memory.
///
/// # Safety
///
/// The crate writes page tables (and the gather's batch records) through the pointers
/// [`Memory::phys_to_virt`] returns, and gives the physical addresses of those frames to
/// the hardware table walker. So an implementation must guarantee that:
///
/// - [`Memory::allocate_frames`] returns `count` physically contiguous frames, aligned as
///   asked, that nothing else uses until they come back through [`Memory::free_frames`] or
///   [`Memory::free_table_frames`];
/// - [`Memory::phys_to_virt`], for any address inside such an allocation, returns a pointer
///   valid for reads and writes up to the end of that allocation for as long as it stays
///   allocated, and it reaches the same physical memory that the hardware walker reads at
///   that address (a normal, cacheable mapping consistent with the table-walk attributes).
pub unsafe trait Memory {
    /// Allocates `count` physically contiguous 4 KiB frames whose first address is a
    /// multiple of `align` bytes (a power of two, at least 4096). Must not block; returns
    /// `None` when no memory is available.
    fn allocate_frames(&mut self, count: usize, align: usize) -> Option<PhysAddr>;

    /// Returns frames obtained from [`Memory::allocate_frames`] (same `pa` and `count`) that
    /// no table walker could reach: the gather's borrowed batch frames, and tables that were
    /// never linked (a failed `map` or `AddressSpace::new` handing back what it allocated).
    fn free_frames(&mut self, pa: PhysAddr, count: usize);

    /// Returns page-table memory (obtained from [`Memory::allocate_frames`], same `pa` and
    /// `count`) that was live and has been unlinked and flushed from every TLB and walk
    /// cache: what `free_tables` and a teardown release through the gather.
    ///
    /// The default is [`Memory::free_frames`]; override it to tell the two apart (to check
    /// a table free, or to keep table memory in its own pool).
    fn free_table_frames(&mut self, pa: PhysAddr, count: usize) {
        self.free_frames(pa, count);
    }

    /// A pointer through which the crate may read and write the frame at `pa`, which the
    /// crate obtained from [`Memory::allocate_frames`]. Must stay valid while the frame is
    /// allocated.
    fn phys_to_virt(&self, pa: PhysAddr) -> NonNull<u8>;

    /// Hands back a frame range that was *mapped* at `va` (not table memory) and has been
    /// unmapped and flushed from every TLB. `bytes` is the mapping size (4 KiB to 1 GiB).
    ///
    /// The default returns it to the allocator with [`Memory::free_frames`]; a kernel that
    /// maps memory it does not allocate (devices, shared pages) overrides this to drop a
    /// reference or ignore the range.
    fn release_mapped(&mut self, va: VirtAddr, pa: PhysAddr, bytes: usize) {
        let _ = va;
        self.free_frames(pa, bytes / PAGE_SIZE as usize);
    }

    /// Hands back a run of leaves that were mapped consecutively (see [`MappedRun`]) and
    /// have been unmapped and flushed from every TLB: the gather calls this once per run it
    /// collected, so a dense unmap of contiguous memory is one call.
    ///
    /// The default calls [`Memory::release_mapped`] for each leaf, so a kernel with
    /// per-page reference counts needs nothing more; a buddy or bitmap allocator overrides
    /// it to free the whole range at once.
    fn release_mapped_run(&mut self, run: MappedRun) {
        let bytes = run.size.bytes() as usize;
        for (va, pa) in run.leaves() {
            self.release_mapped(va, pa, bytes);
        }
    }
}

/// A `&mut` to a memory handle is a memory handle (so a gather or an address space can
/// borrow the kernel's allocator instead of owning a copy).
// SAFETY: every call is forwarded to `T`, which upholds the contract.
unsafe impl<T: Memory + ?Sized> Memory for &mut T {
    fn allocate_frames(&mut self, count: usize, align: usize) -> Option<PhysAddr> {
        (**self).allocate_frames(count, align)
    }
    fn free_frames(&mut self, pa: PhysAddr, count: usize) {
        (**self).free_frames(pa, count)
    }
    fn phys_to_virt(&self, pa: PhysAddr) -> NonNull<u8> {
        (**self).phys_to_virt(pa)
    }
    fn free_table_frames(&mut self, pa: PhysAddr, count: usize) {
        (**self).free_table_frames(pa, count)
    }
    fn release_mapped(&mut self, va: VirtAddr, pa: PhysAddr, bytes: usize) {
        (**self).release_mapped(va, pa, bytes)
    }
    fn release_mapped_run(&mut self, run: MappedRun) {
        (**self).release_mapped_run(run)
    }
}

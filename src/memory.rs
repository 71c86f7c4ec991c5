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

use crate::addr::PhysAddr;

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
///   asked, that nothing else uses until they come back through [`Memory::free_frames`];
/// - [`Memory::phys_to_virt`], for any address inside such an allocation, returns a pointer
///   valid for reads and writes up to the end of that allocation for as long as it stays
///   allocated, and it reaches the same physical memory that the hardware walker reads at
///   that address (a normal, cacheable mapping consistent with the table-walk attributes).
pub unsafe trait Memory {
    /// Allocates `count` physically contiguous 4 KiB frames whose first address is a
    /// multiple of `align` bytes (a power of two, at least 4096). Must not block; returns
    /// `None` when no memory is available.
    fn allocate_frames(&mut self, count: usize, align: usize) -> Option<PhysAddr>;

    /// Returns frames obtained from [`Memory::allocate_frames`] (same `pa` and `count`).
    fn free_frames(&mut self, pa: PhysAddr, count: usize);

    /// A pointer through which the crate may read and write the frame at `pa`, which the
    /// crate obtained from [`Memory::allocate_frames`]. Must stay valid while the frame is
    /// allocated.
    fn phys_to_virt(&self, pa: PhysAddr) -> NonNull<u8>;

    /// Hands back a frame range that was *mapped* (not table memory) and has been unmapped
    /// and flushed from every TLB. `bytes` is the mapping size (4 KiB to 1 GiB): one call per
    /// cleared mapping.
    ///
    /// The default returns it to the allocator with [`Memory::free_frames`]; a kernel that
    /// maps memory it does not allocate (devices, shared pages) overrides this to drop a
    /// reference or ignore the range.
    fn release_mapped(&mut self, pa: PhysAddr, bytes: usize) {
        self.free_frames(pa, bytes / crate::addr::PAGE_SIZE as usize);
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
    fn release_mapped(&mut self, pa: PhysAddr, bytes: usize) {
        (**self).release_mapped(pa, bytes)
    }
}

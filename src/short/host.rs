//! A host [`Memory`] for tests (feature `std`): frames are heap buffers at fake physical
//! addresses, with exact accounting and failure injection.
//!
//! - Fake physical addresses start at `0x1000_0000` and stay below 4 GiB, so short
//!   descriptors can point at them.
//! - Freed frames are kept (filled with `0xdead_beef` words) and handed out again first, so
//!   a stale walk through freed table memory reads garbage or someone else's table, as on
//!   hardware; `phys_to_virt` keeps working for them.
//! - [`HostMemory::fail_nth`] makes the Nth allocation from now fail once.
//! - A request it cannot meet (no frames, more than 4 GiB, an alignment that is not a
//!   power of two or too large) returns `None`, as an exhausted allocator would.
//! - `release_mapped` of a range this memory did not allocate (tests map made-up PAs) is
//!   recorded, not freed.
//!
//! `HostMemory` is a cheap handle (`Clone` shares the state), so an address space, a sink
//! and the test can all hold one.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, MutexGuard};
use std::vec::Vec;

use crate::addr::{PhysAddr, VirtAddr, PAGE_SIZE};
use crate::memory::Memory;

const PAGE: u64 = PAGE_SIZE as u64;
const POISON: u32 = 0xdead_beef;

struct Block {
    ptr: NonNull<u8>,
    frames: usize,
    align: usize,
    live: bool,
}

#[derive(Default)]
struct State {
    /// Every block ever handed out, by fake PA (live or freed-and-kept).
    blocks: BTreeMap<u64, Block>,
    next_pa: u64,
    outstanding: usize,
    allocs: u64,
    frees: u64,
    fail_at: Option<u64>,
    released: Vec<(PhysAddr, usize)>,
}

// SAFETY: the raw pointers are heap buffers owned by `State`, only touched under the mutex
// or through pointers the `Memory` contract hands out.
unsafe impl Send for State {}

impl Drop for State {
    fn drop(&mut self) {
        for b in self.blocks.values() {
            let layout = Layout::from_size_align(b.frames * PAGE as usize, b.align)
                .expect("layout was valid at allocation");
            // SAFETY: allocated in `allocate_frames` with this layout, freed only here.
            unsafe { dealloc(b.ptr.as_ptr(), layout) };
        }
    }
}

/// Statistics of a [`HostMemory`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct HostStats {
    /// Frames currently allocated.
    pub outstanding: usize,
    /// Successful allocation calls.
    pub allocs: u64,
    /// `free_frames` calls.
    pub frees: u64,
}

/// Heap-backed [`Memory`] for host tests.
#[derive(Clone, Default)]
pub struct HostMemory {
    state: Arc<Mutex<State>>,
}

impl HostMemory {
    /// A fresh memory with nothing allocated.
    #[must_use]
    pub fn new() -> Self {
        let m = Self::default();
        m.lock().next_pa = 0x1000_0000;
        m
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Current statistics.
    #[must_use]
    pub fn stats(&self) -> HostStats {
        let s = self.lock();
        HostStats {
            outstanding: s.outstanding,
            allocs: s.allocs,
            frees: s.frees,
        }
    }

    /// Frames currently allocated.
    #[must_use]
    pub fn outstanding(&self) -> usize {
        self.lock().outstanding
    }

    /// Makes the `n`th allocation from now fail once (1 = the next); `None` disarms. An `n`
    /// too far ahead to count to is as good as never.
    pub fn fail_nth(&self, n: Option<u64>) {
        let mut s = self.lock();
        s.fail_at = n.and_then(|n| s.allocs.checked_add(n));
    }

    /// Whether `pa` lies in a currently allocated block.
    #[must_use]
    pub fn is_allocated(&self, pa: PhysAddr) -> bool {
        let s = self.lock();
        Self::find(&s, pa.as_u64()).is_some_and(|(_, b)| b.live)
    }

    /// Ranges handed to `release_mapped` that this memory did not allocate.
    #[must_use]
    pub fn released_foreign(&self) -> Vec<(PhysAddr, usize)> {
        self.lock().released.clone()
    }

    fn find(s: &State, pa: u64) -> Option<(u64, &Block)> {
        let (&start, b) = s.blocks.range(..=pa).next_back()?;
        (pa < start + b.frames as u64 * PAGE).then_some((start, b))
    }
}

// SAFETY: every allocation is a separate, zeroed heap block owned by this `HostMemory`
// (aligned as asked) and `phys_to_virt` maps a fake PA into that block; blocks are never
// reused while allocated.
unsafe impl Memory for HostMemory {
    fn allocate_frames(&mut self, count: usize, align: usize) -> Option<PhysAddr> {
        let mut s = self.lock();
        if let Some(n) = s.fail_at {
            if s.allocs + 1 >= n {
                s.fail_at = None;
                return None;
            }
        }
        // Nothing, more than the 4 GiB of fake physical addresses, or an alignment that is
        // not a power of two: refused like an exhausted allocator (what a kernel's would
        // do), with no state changed.
        let bytes = (count as u64).checked_mul(PAGE)?;
        if count == 0 || bytes > 1 << 32 || !align.is_power_of_two() {
            return None;
        }
        let align = align.max(PAGE as usize);
        // Reuse a freed block of the same shape first (most recently freed last in map
        // order does not matter for tests; any reuse exercises stale walks).
        let reuse = s
            .blocks
            .iter()
            .find(|(&pa, b)| !b.live && b.frames == count && pa % align as u64 == 0)
            .map(|(&pa, _)| pa);
        let pa = if let Some(pa) = reuse {
            let b = s.blocks.get_mut(&pa)?;
            b.live = true;
            // SAFETY: the block's buffer is `count` frames long and owned by us.
            unsafe { std::ptr::write_bytes(b.ptr.as_ptr(), 0, count * PAGE as usize) };
            pa
        } else {
            // A huge `align` overflows here or passes the limit below: refused.
            let pa = s.next_pa.div_ceil(align as u64).checked_mul(align as u64)?;
            if pa.checked_add(bytes)? > 1 << 32 {
                return None;
            }
            let layout = Layout::from_size_align(bytes as usize, align).ok()?;
            // SAFETY: non-zero size.
            let ptr = NonNull::new(unsafe { alloc_zeroed(layout) })?;
            s.blocks.insert(
                pa,
                Block {
                    ptr,
                    frames: count,
                    align,
                    live: true,
                },
            );
            s.next_pa = pa + bytes;
            pa
        };
        s.outstanding += count;
        s.allocs += 1;
        Some(PhysAddr::new(pa))
    }

    fn free_frames(&mut self, pa: PhysAddr, count: usize) {
        let mut s = self.lock();
        let b = s
            .blocks
            .get_mut(&pa.as_u64())
            .unwrap_or_else(|| panic!("free of {pa} which was never allocated"));
        assert!(b.live, "double free of {pa}");
        assert_eq!(b.frames, count, "free of {pa} with the wrong frame count");
        b.live = false;
        let words = count * PAGE as usize / 4;
        let p = b.ptr.as_ptr().cast::<u32>();
        for i in 0..words {
            // SAFETY: inside the block's buffer.
            unsafe { p.add(i).write(POISON) };
        }
        s.outstanding -= count;
        s.frees += 1;
    }

    fn phys_to_virt(&self, pa: PhysAddr) -> NonNull<u8> {
        let s = self.lock();
        let (start, b) = Self::find(&s, pa.as_u64())
            .unwrap_or_else(|| panic!("phys_to_virt({pa}): not memory of this HostMemory"));
        // SAFETY: `pa - start` is inside the block (checked by `find`).
        unsafe { NonNull::new_unchecked(b.ptr.as_ptr().add((pa.as_u64() - start) as usize)) }
    }

    fn release_mapped(&mut self, _va: VirtAddr, pa: PhysAddr, bytes: usize) {
        let known = self
            .lock()
            .blocks
            .get(&pa.as_u64())
            .is_some_and(|b| b.live && b.frames * PAGE as usize == bytes);
        if known {
            self.free_frames(pa, bytes / PAGE as usize);
        } else {
            self.lock().released.push((pa, bytes));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arming_far_ahead_does_not_overflow() {
        let mut m = HostMemory::new();
        let a = m.allocate_frames(1, 4096).expect("frame");
        m.fail_nth(Some(u64::MAX));
        let b = m
            .allocate_frames(1, 4096)
            .expect("the failure is far ahead");
        m.fail_nth(Some(2));
        let c = m
            .allocate_frames(1, 4096)
            .expect("the failure is the one after");
        assert_eq!(
            m.allocate_frames(1, 4096),
            None,
            "the 2nd from arming fails"
        );
        assert!(m.allocate_frames(1, 4096).is_some(), "once");
        for pa in [a, b, c] {
            m.free_frames(pa, 1);
        }
    }

    #[test]
    fn impossible_requests_are_refused() {
        let mut m = HostMemory::new();
        // A freed block a bad alignment could wrongly match.
        let kept = m.allocate_frames(3, 4096).expect("frames");
        m.free_frames(kept, 3);
        let before = m.stats();
        for (count, align) in [
            (usize::MAX, 4096),
            (usize::MAX / 4096 + 1, 4096),
            (1 << 20, 4096),
            (1, usize::MAX),
            (1, 1 << 63),
            (1, 1 << 40),
            (1, 3 * 4096),
            (3, 3 * 4096),
            (0, 4096),
        ] {
            assert_eq!(m.allocate_frames(count, align), None, "{count} x {align}");
            assert_eq!(m.stats(), before, "{count} x {align}");
        }
        // Still usable, and the freed block is reused.
        assert_eq!(m.allocate_frames(3, 4096), Some(kept));
        m.free_frames(kept, 3);
        assert_eq!(m.outstanding(), 0);
    }
}

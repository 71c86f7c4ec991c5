//! How descriptors reach table memory: the one store of a live entry ([`write_entry`]),
//! zeroing a new table, and the cache clean and barriers that make writes visible to the
//! hardware walker. Every operation in the sibling files writes through these; host tests
//! watch each store through [`store_probe`] and switch on its mutants.

use super::Word;

/// Makes descriptor writes at `p..p+len` visible to a non-coherent table walker.
#[inline(always)]
pub(super) fn clean_for_walker<T>(coherent: bool, p: *const T, len: usize) {
    if !coherent {
        #[cfg(target_arch = "arm")]
        crate::arch::mmu::clean_dcache_for_walker(p as usize, len);
        #[cfg(not(target_arch = "arm"))]
        let _ = (p, len);
    }
}

/// Completes descriptor writes for every table walker in the inner shareable domain and
/// resynchronizes this CPU's context.
#[inline]
pub(super) fn publish(coherent: bool) {
    #[cfg(target_arch = "arm")]
    crate::arch::mmu::publish_table_writes(coherent);
    #[cfg(not(target_arch = "arm"))]
    let _ = coherent;
}

/// Zeroes `bytes` (a multiple of 32) at `p` (8-byte aligned) with 64-bit stores, four to a
/// loop step: a new table costs a quarter of a store per word instead of the byte-generic
/// `memset` (about three instructions per word on ARMv7). The stores are volatile so the
/// loop is not turned back into a `memset` call.
///
/// # Safety
/// `p..p + bytes` must be memory the caller owns, writable and not reachable by a walker.
#[inline]
pub(super) unsafe fn zero_table<T>(p: *mut T, bytes: usize) {
    debug_assert!(bytes.is_multiple_of(32) && (p as usize).is_multiple_of(8));
    let mut q = p.cast::<u64>();
    // SAFETY: per the contract, `p..p + bytes` is ours and 8-byte aligned; `end` is its end.
    let end = unsafe { q.add(bytes / 8) };
    while q < end {
        // SAFETY: `q + 4 <= end` (the length is a multiple of 32 bytes), inside the range.
        unsafe {
            q.write_volatile(0);
            q.add(1).write_volatile(0);
            q.add(2).write_volatile(0);
            q.add(3).write_volatile(0);
            q = q.add(4);
        }
    }
}

/// Writes one live descriptor (single-copy atomic) and cleans it for the walker.
#[inline(always)]
pub(super) fn write_entry<W: Word>(coherent: bool, p: *mut W, v: W) {
    // SAFETY: callers pass an entry of a table the space owns (found by the walker or
    // computed from a checked index).
    unsafe { W::store(p, v) };
    #[cfg(test)]
    store_probe::stored(p as usize, v.to_u64());
    clean_for_walker(coherent, p, W::BYTES);
}

/// Host tests only: a hook called after every live descriptor store, so a test can check an
/// invariant at each instant a walker could observe (break-before-make of replicated
/// leaves: `gather::protect_tests`).
#[cfg(test)]
#[cfg_attr(not(feature = "tlb-model"), allow(dead_code))]
pub(crate) mod store_probe {
    use std::boxed::Box;
    use std::cell::RefCell;

    use std::cell::Cell;

    type Probe = Box<dyn FnMut(usize, u64)>;

    /// Wrong `protect` sequences a test can switch on to show its checks catch them.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub(crate) enum Mutant {
        /// The real sequence.
        None,
        /// Replicated leaves rewritten copy by copy over the live entries.
        InPlace,
        /// Break-before-make without the flush between the break and the make.
        NoFlush,
        /// A block split without the flush between clearing the block and installing the
        /// table of smaller leaves.
        SplitNoFlush,
    }

    std::thread_local! {
        static PROBE: RefCell<Option<Probe>> = const { RefCell::new(None) };
        static MUTANT: Cell<Mutant> = const { Cell::new(Mutant::None) };
    }

    /// Switches a mutant on (or back to [`Mutant::None`]) on this thread.
    pub(crate) fn set_mutant(m: Mutant) {
        MUTANT.with(|c| c.set(m));
    }

    pub(in crate::table::space) fn mutant() -> Mutant {
        MUTANT.with(Cell::get)
    }

    /// Calls `probe(address, value)` after every descriptor store on this thread until
    /// [`clear`].
    pub(crate) fn set(probe: impl FnMut(usize, u64) + 'static) {
        PROBE.with(|p| *p.borrow_mut() = Some(Box::new(probe)));
    }

    /// Removes the probe.
    pub(crate) fn clear() {
        PROBE.with(|p| *p.borrow_mut() = None);
    }

    pub(super) fn stored(addr: usize, value: u64) {
        PROBE.with(|p| {
            if let Some(f) = p.borrow_mut().as_mut() {
                f(addr, value);
            }
        });
    }
}

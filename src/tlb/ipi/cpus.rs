//! Which CPUs a shootdown interrupts: [`CpuSet`] (a set of CPU numbers as a value) and
//! [`CpuMask`] (the per-address-space atomic mask every CPU marks before it walks the
//! space's tables, loaded by the initiator after its `dsb ish`).

use core::fmt;
use core::sync::atomic::{fence, AtomicU32, Ordering};

/// Most CPUs a [`CpuSet`] / [`CpuMask`] names (one bit each in a 32-bit word).
pub const MAX_CPUS: usize = 32;

/// A CPU number that does not fit a [`CpuSet`] (`cpu >= MAX_CPUS`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct CpuOutOfRange(pub usize);

impl fmt::Display for CpuOutOfRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CPU {} is out of range (at most {MAX_CPUS} CPUs)",
            self.0
        )
    }
}

/// A set of CPU numbers (bit `n` = CPU `n`), as a value.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct CpuSet(pub u32);

impl CpuSet {
    /// No CPU.
    pub const EMPTY: CpuSet = CpuSet(0);

    /// CPUs `0..n` (all 32 for `n >= 32`).
    #[must_use]
    pub const fn first(n: usize) -> CpuSet {
        if n >= MAX_CPUS {
            CpuSet(u32::MAX)
        } else {
            CpuSet((1u32 << n) - 1)
        }
    }

    /// The set with `cpu` only.
    ///
    /// # Errors
    /// [`CpuOutOfRange`] when `cpu >= MAX_CPUS`.
    pub const fn single(cpu: usize) -> Result<CpuSet, CpuOutOfRange> {
        if cpu >= MAX_CPUS {
            Err(CpuOutOfRange(cpu))
        } else {
            Ok(CpuSet(1 << cpu))
        }
    }

    /// Whether `cpu` is in the set (false for out-of-range numbers).
    #[must_use]
    pub const fn contains(self, cpu: usize) -> bool {
        cpu < MAX_CPUS && self.0 & (1 << cpu) != 0
    }

    /// The set without `cpu` (unchanged for out-of-range numbers).
    #[must_use]
    pub const fn without(self, cpu: usize) -> CpuSet {
        if cpu >= MAX_CPUS {
            self
        } else {
            CpuSet(self.0 & !(1 << cpu))
        }
    }

    /// The CPUs in both sets.
    #[must_use]
    pub const fn and(self, other: CpuSet) -> CpuSet {
        CpuSet(self.0 & other.0)
    }

    /// Whether the set is empty.
    #[must_use]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// How many CPUs are in the set.
    #[must_use]
    pub const fn len(self) -> u32 {
        self.0.count_ones()
    }

    /// The CPU numbers in the set, lowest first.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        (0..MAX_CPUS).filter(move |&c| self.contains(c))
    }
}

/// The CPUs that may hold translations of one address space: set by a CPU before it walks
/// the space's tables, read by the initiator of a shootdown after its `dsb ish` (see the
/// module documentation for why that is sound under concurrent switches).
#[derive(Debug, Default)]
pub struct CpuMask(AtomicU32);

impl CpuMask {
    /// No CPU has run the space.
    #[must_use]
    pub const fn new() -> Self {
        Self(AtomicU32::new(0))
    }

    /// Marks `cpu` as running the space. Call it before the CPU can walk the space's
    /// tables (before its `TTBR0` write); the crate's switch paths do.
    ///
    /// # Errors
    /// [`CpuOutOfRange`] when `cpu >= MAX_CPUS` (nothing is changed).
    pub fn enter(&self, cpu: usize) -> Result<(), CpuOutOfRange> {
        let bit = CpuSet::single(cpu)?;
        self.0.fetch_or(bit.0, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        // A `dmb` orders explicit accesses only; the store must also complete before any
        // table walk the switch lets happen.
        #[cfg(target_arch = "arm")]
        crate::arch::barrier::dsb_ish();
        Ok(())
    }

    /// Forgets `cpu`: only for a CPU that has invalidated its whole TLB (TLBIALL, `dsb
    /// nsh`) while not running the space, so that it holds nothing of it.
    pub fn forget(&self, cpu: usize) {
        if let Ok(bit) = CpuSet::single(cpu) {
            self.0.fetch_and(!bit.0, Ordering::SeqCst);
        }
    }

    /// The CPUs marked now.
    #[must_use]
    pub fn load(&self) -> CpuSet {
        fence(Ordering::SeqCst);
        CpuSet(self.0.load(Ordering::SeqCst))
    }
}

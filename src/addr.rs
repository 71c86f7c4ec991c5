//! Typed addresses, pages, frames and page-aligned ranges.
//!
//! Virtual addresses on ARMv7-A are 32 bits. Physical addresses are carried as 64 bits
//! because LPAE and supersections reach 40-bit physical addresses; the short-descriptor
//! walker rejects what it cannot encode with a typed error.

use core::fmt;

/// The smallest translation granule: 4 KiB.
pub const PAGE_SIZE: u32 = 4096;
/// `log2(PAGE_SIZE)`.
pub const PAGE_SHIFT: u32 = 12;

/// A 32-bit virtual address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct VirtAddr(u32);

/// A physical address (up to 40 bits are meaningful on ARMv7-A with LPAE).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct PhysAddr(u64);

impl VirtAddr {
    /// Wraps a raw address.
    #[must_use]
    pub const fn new(addr: u32) -> Self {
        Self(addr)
    }
    /// The raw address.
    #[must_use]
    pub const fn as_u32(self) -> u32 {
        self.0
    }
    /// The address widened to 64 bits (handy for exclusive range ends).
    #[must_use]
    pub const fn as_u64(self) -> u64 {
        self.0 as u64
    }
    /// Whether the address is a multiple of `align` (a power of two).
    #[must_use]
    pub const fn is_aligned(self, align: u32) -> bool {
        self.0 & (align - 1) == 0
    }
    /// Rounds down to a multiple of `align` (a power of two).
    #[must_use]
    pub const fn align_down(self, align: u32) -> Self {
        Self(self.0 & !(align - 1))
    }
    /// Adds `off`, or `None` on overflow past 4 GiB.
    #[must_use]
    pub const fn checked_add(self, off: u32) -> Option<Self> {
        match self.0.checked_add(off) {
            Some(v) => Some(Self(v)),
            None => None,
        }
    }
    /// Index of the 1 MiB region (L1 short-descriptor entry) holding this address.
    #[must_use]
    pub const fn l1_index(self) -> usize {
        (self.0 >> 20) as usize
    }
    /// Index of the 4 KiB page inside its 1 MiB region (L2 short-descriptor entry).
    #[must_use]
    pub const fn l2_index(self) -> usize {
        ((self.0 >> 12) & 0xff) as usize
    }
}

impl PhysAddr {
    /// Wraps a raw address.
    #[must_use]
    pub const fn new(addr: u64) -> Self {
        Self(addr)
    }
    /// The raw address.
    #[must_use]
    pub const fn as_u64(self) -> u64 {
        self.0
    }
    /// Whether the address is a multiple of `align` (a power of two).
    #[must_use]
    pub const fn is_aligned(self, align: u64) -> bool {
        self.0 & (align - 1) == 0
    }
    /// Rounds down to a multiple of `align` (a power of two).
    #[must_use]
    pub const fn align_down(self, align: u64) -> Self {
        Self(self.0 & !(align - 1))
    }
    /// Adds `off`, or `None` on overflow.
    #[must_use]
    pub const fn checked_add(self, off: u64) -> Option<Self> {
        match self.0.checked_add(off) {
            Some(v) => Some(Self(v)),
            None => None,
        }
    }
}

impl fmt::Debug for VirtAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VA({:#010x})", self.0)
    }
}
impl fmt::Display for VirtAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#010x}", self.0)
    }
}
impl fmt::Debug for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PA({:#x})", self.0)
    }
}
impl fmt::Display for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// A 4 KiB-aligned virtual page.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Page(VirtAddr);

/// A 4 KiB-aligned physical frame.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Frame(PhysAddr);

impl Page {
    /// The page starting at `va`, or `None` if `va` is not 4 KiB aligned.
    #[must_use]
    pub const fn from_start(va: VirtAddr) -> Option<Self> {
        if va.is_aligned(PAGE_SIZE) {
            Some(Self(va))
        } else {
            None
        }
    }
    /// The page containing `va`.
    #[must_use]
    pub const fn containing(va: VirtAddr) -> Self {
        Self(va.align_down(PAGE_SIZE))
    }
    /// First address of the page.
    #[must_use]
    pub const fn start(self) -> VirtAddr {
        self.0
    }
}

impl Frame {
    /// The frame starting at `pa`, or `None` if `pa` is not 4 KiB aligned.
    #[must_use]
    pub const fn from_start(pa: PhysAddr) -> Option<Self> {
        if pa.is_aligned(PAGE_SIZE as u64) {
            Some(Self(pa))
        } else {
            None
        }
    }
    /// The frame containing `pa`.
    #[must_use]
    pub const fn containing(pa: PhysAddr) -> Self {
        Self(pa.align_down(PAGE_SIZE as u64))
    }
    /// First address of the frame.
    #[must_use]
    pub const fn start(self) -> PhysAddr {
        self.0
    }
}

/// The top of the 32-bit virtual address space, `1 << 32`, as a range end.
const TOP: u64 = 1 << 32;

/// An exclusive end of a virtual range: an address in `[0, 4 GiB]`.
///
/// A [`VirtAddr`] stops at `0xffff_ffff`, so the end of a range reaching the top of the
/// address space (a `Layout::Kernel` half, [`VirtRange::ALL`]) needs one more bit. Every
/// `VirtAddr` is a valid end (`VirtEnd::from(va)`); [`VirtEnd::TOP`] is the one value
/// beyond them.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct VirtEnd(u64);

impl VirtEnd {
    /// `4 GiB`: the end of a range that reaches the top of the address space.
    pub const TOP: VirtEnd = VirtEnd(TOP);

    /// The end `end`, for runtime input.
    ///
    /// # Errors
    /// [`RangeError::Invalid`] past 4 GiB.
    pub const fn new(end: u64) -> Result<Self, RangeError> {
        if end > TOP {
            Err(RangeError::Invalid)
        } else {
            Ok(Self(end))
        }
    }
    /// The end at `va` (the range stops just below `va`).
    #[must_use]
    pub const fn at(va: VirtAddr) -> Self {
        Self(va.0 as u64)
    }
    /// The end as a 64-bit number, at most `1 << 32`.
    #[must_use]
    pub const fn as_u64(self) -> u64 {
        self.0
    }
    /// The end as an address, or `None` for [`VirtEnd::TOP`].
    #[must_use]
    pub const fn addr(self) -> Option<VirtAddr> {
        if self.0 < TOP {
            Some(VirtAddr(self.0 as u32))
        } else {
            None
        }
    }
}

impl From<VirtAddr> for VirtEnd {
    fn from(va: VirtAddr) -> Self {
        Self::at(va)
    }
}

impl fmt::Debug for VirtEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "End({:#011x})", self.0)
    }
}
impl fmt::Display for VirtEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#011x}", self.0)
    }
}

/// A half-open, page-aligned virtual range `[start, end)`; `end` may be [`VirtEnd::TOP`].
///
/// Three ways to build one:
/// - constants: [`VirtRange::pages`]`::<START, N>()` is checked when it is compiled and
///   cannot fail at run time;
/// - [`VirtRange::ALL`], the whole 4 GiB (e.g. the bounds of a `free_tables` with no
///   neighbours to keep);
/// - runtime input (a `mmap` length, a user pointer): [`VirtRange::from_start_len`] and
///   [`VirtRange::new`] return a [`RangeError`], which converts into [`crate::Error`].
///
/// ```
/// use armv7_mm::{VirtAddr, VirtRange};
///
/// const HEAP: VirtRange = VirtRange::pages::<0x1000_0000, 16>(); // 64 KiB
/// assert_eq!(HEAP.len(), 0x1_0000);
/// assert_eq!(HEAP, VirtRange::from_start_len(VirtAddr::new(0x1000_0000), 0x1_0000)?);
/// assert!(VirtRange::ALL.covers(&HEAP));
/// # Ok::<(), armv7_mm::addr::RangeError>(())
/// ```
///
/// A misaligned or overflowing constant does not build:
///
/// ```compile_fail,E0080
/// const BAD: armv7_mm::VirtRange = armv7_mm::VirtRange::pages::<0x1000_0800, 1>();
/// ```
///
/// ```compile_fail,E0080
/// let _ = armv7_mm::VirtRange::pages::<0xffff_f000, 2>(); // past 4 GiB
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct VirtRange {
    start: u32,
    end: u64,
}

/// Why a [`VirtRange`] (or a [`VirtEnd`]) could not be built.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RangeError {
    /// Start or end is not 4 KiB aligned.
    Misaligned,
    /// `end < start`, or `end` is past 4 GiB.
    Invalid,
}

impl VirtRange {
    /// The whole 32-bit address space, `[0, 4 GiB)`.
    pub const ALL: VirtRange = VirtRange { start: 0, end: TOP };

    /// `N` pages from `START`, checked at compile time: a misaligned `START`, or an end
    /// past 4 GiB, is a build error (the check is a `const` block), so the call can
    /// neither fail nor panic when it runs.
    #[must_use]
    pub const fn pages<const START: u32, const N: u32>() -> Self {
        const {
            assert!(
                START.is_multiple_of(PAGE_SIZE),
                "VirtRange::pages: START is not 4 KiB aligned"
            );
            assert!(
                START as u64 + N as u64 * PAGE_SIZE as u64 <= TOP,
                "VirtRange::pages: the range ends past 4 GiB"
            );
        }
        Self {
            start: START,
            end: START as u64 + N as u64 * PAGE_SIZE as u64,
        }
    }
    /// `[start, end)`, for runtime input; both page aligned, `start <= end`.
    ///
    /// # Errors
    /// [`RangeError::Misaligned`] or [`RangeError::Invalid`].
    pub const fn new(start: VirtAddr, end: VirtEnd) -> Result<Self, RangeError> {
        if end.0 < start.0 as u64 {
            return Err(RangeError::Invalid);
        }
        if !start.0.is_multiple_of(PAGE_SIZE) || !end.0.is_multiple_of(PAGE_SIZE as u64) {
            return Err(RangeError::Misaligned);
        }
        Ok(Self {
            start: start.0,
            end: end.0,
        })
    }
    /// `[start, start + len)`, for runtime input (`len` may reach 4 GiB).
    ///
    /// # Errors
    /// As [`VirtRange::new`], and [`RangeError::Invalid`] when the end is past 4 GiB.
    pub const fn from_start_len(start: VirtAddr, len: u64) -> Result<Self, RangeError> {
        match (start.0 as u64).checked_add(len) {
            Some(end) if end <= TOP => Self::new(start, VirtEnd(end)),
            _ => Err(RangeError::Invalid),
        }
    }
    /// First address.
    #[must_use]
    pub const fn start(&self) -> VirtAddr {
        VirtAddr(self.start)
    }
    /// One past the last address (up to [`VirtEnd::TOP`]).
    #[must_use]
    pub const fn end(&self) -> VirtEnd {
        VirtEnd(self.end)
    }
    /// Length in bytes.
    #[must_use]
    pub const fn len(&self) -> u64 {
        self.end - self.start as u64
    }
    /// Whether the range is empty.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Number of 4 KiB pages.
    #[must_use]
    pub const fn page_count(&self) -> u64 {
        self.len() / PAGE_SIZE as u64
    }
    /// Whether `va` lies in the range.
    #[must_use]
    pub const fn contains(&self, va: VirtAddr) -> bool {
        va.0 >= self.start && (va.0 as u64) < self.end
    }
    /// Whether `other` lies wholly inside this range.
    #[must_use]
    pub const fn covers(&self, other: &VirtRange) -> bool {
        other.start >= self.start && other.end <= self.end
    }
    /// The pages of the range, in order.
    pub fn iter_pages(&self) -> impl Iterator<Item = Page> {
        let start = self.start as u64;
        (start..self.end)
            .step_by(PAGE_SIZE as usize)
            .map(|a| Page(VirtAddr(a as u32)))
    }
}

#[cfg(test)]
impl VirtRange {
    /// Tests written with Linux's `floor`/`ceiling` pair: `[floor, ceiling)` as bounds.
    pub(crate) fn floor_ceiling(floor: VirtAddr, ceiling: u64) -> Self {
        let end = VirtEnd::new(ceiling).expect("ceiling <= 4 GiB");
        Self::new(floor, end).expect("page-aligned floor <= ceiling")
    }
}

impl fmt::Debug for VirtRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#010x}, {:#011x})", self.start, self.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_checks() {
        let end = |e| VirtEnd::new(e).unwrap();
        assert_eq!(
            VirtRange::new(VirtAddr::new(0x1001), end(0x2000)),
            Err(RangeError::Misaligned)
        );
        assert_eq!(
            VirtRange::new(VirtAddr::new(0x2000), end(0x1000)),
            Err(RangeError::Invalid)
        );
        assert_eq!(VirtEnd::new((1 << 32) + 4096), Err(RangeError::Invalid));
        assert_eq!(
            VirtRange::from_start_len(VirtAddr::new(0x1000), 1 << 32),
            Err(RangeError::Invalid)
        );
        assert_eq!(
            VirtRange::from_start_len(VirtAddr::new(0), u64::MAX),
            Err(RangeError::Invalid)
        );
        let whole = VirtRange::new(VirtAddr::new(0), VirtEnd::TOP).unwrap();
        assert_eq!(whole, VirtRange::ALL);
        assert_eq!(whole.page_count(), 1 << 20);
        assert_eq!(whole.end().addr(), None);
        let r = VirtRange::from_start_len(VirtAddr::new(0x4000_0000), 0x3000).unwrap();
        assert_eq!(r, VirtRange::pages::<0x4000_0000, 3>());
        assert_eq!(r.end(), VirtEnd::from(VirtAddr::new(0x4000_3000)));
        assert_eq!(r.end().addr(), Some(VirtAddr::new(0x4000_3000)));
        assert_eq!(r.iter_pages().count(), 3);
        assert_eq!(VirtRange::pages::<0xffff_f000, 1>().end(), VirtEnd::TOP);
        assert!(VirtRange::pages::<0x1000, 0>().is_empty());
        assert!(r.contains(VirtAddr::new(0x4000_2fff)));
        assert!(!r.contains(VirtAddr::new(0x4000_3000)));
        assert!(whole.covers(&r) && !r.covers(&whole));
    }

    #[test]
    fn indices() {
        let va = VirtAddr::new(0x1234_5678);
        assert_eq!(va.l1_index(), 0x123);
        assert_eq!(va.l2_index(), 0x45);
        assert_eq!(Page::containing(va).start(), VirtAddr::new(0x1234_5000));
        assert!(Page::from_start(va).is_none());
        assert!(Frame::from_start(PhysAddr::new(0x1_0000_0000)).is_some());
    }
}

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

/// A half-open, page-aligned virtual range `[start, end)`; `end` may be `1 << 32`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct VirtRange {
    start: u32,
    end: u64,
}

/// Why a [`VirtRange`] could not be built.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RangeError {
    /// Start or end is not 4 KiB aligned.
    Misaligned,
    /// `end < start`, or `end` is past 4 GiB.
    Invalid,
}

impl VirtRange {
    /// `[start, end)`; both page aligned, `start <= end <= 1 << 32`.
    ///
    /// # Errors
    /// [`RangeError::Misaligned`] or [`RangeError::Invalid`].
    pub const fn new(start: VirtAddr, end: u64) -> Result<Self, RangeError> {
        if end < start.0 as u64 || end > 1 << 32 {
            return Err(RangeError::Invalid);
        }
        if !start.0.is_multiple_of(PAGE_SIZE) || !end.is_multiple_of(PAGE_SIZE as u64) {
            return Err(RangeError::Misaligned);
        }
        Ok(Self {
            start: start.0,
            end,
        })
    }
    /// `[start, start + len)`.
    ///
    /// # Errors
    /// As [`VirtRange::new`].
    pub const fn from_start_len(start: VirtAddr, len: u64) -> Result<Self, RangeError> {
        match (start.0 as u64).checked_add(len) {
            Some(end) => Self::new(start, end),
            None => Err(RangeError::Invalid),
        }
    }
    /// First address.
    #[must_use]
    pub const fn start(&self) -> VirtAddr {
        VirtAddr(self.start)
    }
    /// One past the last address (up to `1 << 32`).
    #[must_use]
    pub const fn end(&self) -> u64 {
        self.end
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
    pub fn pages(&self) -> impl Iterator<Item = Page> {
        let start = self.start as u64;
        (start..self.end)
            .step_by(PAGE_SIZE as usize)
            .map(|a| Page(VirtAddr(a as u32)))
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
        assert_eq!(
            VirtRange::new(VirtAddr::new(0x1001), 0x2000),
            Err(RangeError::Misaligned)
        );
        assert_eq!(
            VirtRange::new(VirtAddr::new(0x2000), 0x1000),
            Err(RangeError::Invalid)
        );
        assert_eq!(
            VirtRange::new(VirtAddr::new(0), (1 << 32) + 4096),
            Err(RangeError::Invalid)
        );
        let whole = VirtRange::new(VirtAddr::new(0), 1 << 32).unwrap();
        assert_eq!(whole.page_count(), 1 << 20);
        let r = VirtRange::from_start_len(VirtAddr::new(0x4000_0000), 0x3000).unwrap();
        assert_eq!(r.pages().count(), 3);
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

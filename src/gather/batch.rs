//! Frames waiting for the flush: a small on-stack batch, then batches in frames borrowed
//! from the allocator.
//!
//! Each waiting item is one 32-bit word: the frame number (PA >> 12, so PAs below 2^40,
//! all that ARMv7-A can map) in bits 31..4 and a 4-bit code: 0..=5 for a mapped leaf of
//! that [`MapSize`], 6..=15 for 1..=10 frames of table memory. Whatever does not fit (a PA
//! at or past 2^40, a misaligned PA, table memory of more than 10 frames) is never put in
//! a batch: the gather flushes at once and frees it directly (see [`Pending::encode`]).
//!
//! A borrowed batch frame is 1024 words: `[count, next_lo, next_hi, magic]` then
//! [`ENTRIES_PER_FRAME`] entries. The frames form a singly linked list that is kept across
//! intermediate flushes (emptied, then refilled) and returned to the allocator when the
//! gather ends.

use crate::addr::{PhysAddr, PAGE_SIZE};
use crate::memory::Memory;
use crate::sink::MapSize;

use super::report::FlushReport;

/// Entries in the on-stack batch.
pub const LOCAL_BATCH: usize = 8;
const WORDS_PER_FRAME: usize = PAGE_SIZE as usize / 4;
const HEADER_WORDS: usize = 4;
/// Entries one borrowed 4 KiB batch frame holds.
pub const ENTRIES_PER_FRAME: usize = WORDS_PER_FRAME - HEADER_WORDS;
const NONE: u64 = u64::MAX;
const MAGIC: u32 = 0x6761_7468;

const CODE_BITS: u32 = 4;
const CODE_MASK: u32 = (1 << CODE_BITS) - 1;
const PFN_LIMIT: u64 = 1 << (32 - CODE_BITS);
const TABLE_BASE: u32 = 5;
/// Most table frames one entry can carry.
const MAX_TABLE_FRAMES: usize = (CODE_MASK - TABLE_BASE) as usize;

const SIZES: [MapSize; 6] = [
    MapSize::Page4K,
    MapSize::Large64K,
    MapSize::Section1M,
    MapSize::Block2M,
    MapSize::Super16M,
    MapSize::Block1G,
];

/// One thing to hand back after the flush.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Pending {
    /// A mapped range: [`Memory::release_mapped`].
    Mapped { pa: PhysAddr, size: MapSize },
    /// Table memory: [`Memory::free_frames`].
    Table { pa: PhysAddr, frames: usize },
}

impl Pending {
    /// The batch word for this item, or `None` if it cannot be packed.
    pub(crate) fn encode(self) -> Option<u32> {
        let (pa, code) = match self {
            Pending::Mapped { pa, size } => {
                let idx = SIZES.iter().position(|&s| s == size)?;
                (pa, idx as u32)
            }
            Pending::Table { pa, frames } => {
                if frames == 0 || frames > MAX_TABLE_FRAMES {
                    return None;
                }
                (pa, TABLE_BASE + frames as u32)
            }
        };
        if !pa.is_aligned(PAGE_SIZE as u64) {
            return None;
        }
        let pfn = pa.as_u64() / PAGE_SIZE as u64;
        if pfn >= PFN_LIMIT {
            return None;
        }
        Some(((pfn as u32) << CODE_BITS) | code)
    }

    /// The item a batch word stands for.
    pub(crate) fn decode(word: u32) -> Self {
        let pa = PhysAddr::new((word >> CODE_BITS) as u64 * PAGE_SIZE as u64);
        let code = word & CODE_MASK;
        if code <= TABLE_BASE {
            Pending::Mapped {
                pa,
                size: SIZES[code as usize],
            }
        } else {
            Pending::Table {
                pa,
                frames: (code - TABLE_BASE) as usize,
            }
        }
    }

    /// Hands the item back to `memory` and counts it in `report`. Only after the flush.
    pub(crate) fn release<M: Memory>(self, memory: &mut M, report: &mut FlushReport) {
        match self {
            Pending::Mapped { pa, size } => {
                memory.release_mapped(pa, size.bytes() as usize);
                report.leaves_released += 1;
                report.bytes_released += size.bytes();
            }
            Pending::Table { pa, frames } => {
                memory.free_frames(pa, frames);
                report.table_frames_freed += frames as u32;
            }
        }
    }
}

/// Why an item could not be batched: the caller must flush (which empties the batches)
/// and push again.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct BatchFull {
    /// The allocator was asked for a batch frame and had none.
    pub(crate) alloc_failed: bool,
}

/// The batches of one gather.
#[derive(Debug)]
pub(crate) struct FrameBatches {
    local: [u32; LOCAL_BATCH],
    local_len: u8,
    /// Borrowed frames in the list.
    borrowed: u16,
    /// PA of the first borrowed frame, or `NONE`.
    first: u64,
    /// PA of the borrowed frame being filled, or `NONE`.
    cur: u64,
}

/// Reads word `index` of batch frame `frame`.
fn read_word<M: Memory>(memory: &M, frame: u64, index: usize) -> u32 {
    assert!(index < WORDS_PER_FRAME);
    let base = memory.phys_to_virt(PhysAddr::new(frame)).as_ptr();
    // SAFETY: `frame` is a batch frame this gather got from `allocate_frames(1, 4096)` and
    // has not returned, so `phys_to_virt` gives a pointer valid for reads and writes of its
    // 4096 bytes; `index < 1024` keeps the 4-byte access inside them. Nobody else uses the
    // frame while the gather holds it. Unaligned access, so no alignment is assumed.
    unsafe { base.cast::<u32>().add(index).read_unaligned() }
}

/// Writes word `index` of batch frame `frame`.
fn write_word<M: Memory>(memory: &M, frame: u64, index: usize, value: u32) {
    assert!(index < WORDS_PER_FRAME);
    let base = memory.phys_to_virt(PhysAddr::new(frame)).as_ptr();
    // SAFETY: as in `read_word`: an allocated batch frame owned by this gather, and the
    // access stays inside its 4096 bytes.
    unsafe { base.cast::<u32>().add(index).write_unaligned(value) }
}

fn next_of<M: Memory>(memory: &M, frame: u64) -> u64 {
    read_word(memory, frame, 1) as u64 | (read_word(memory, frame, 2) as u64) << 32
}

fn set_next<M: Memory>(memory: &M, frame: u64, next: u64) {
    write_word(memory, frame, 1, next as u32);
    write_word(memory, frame, 2, (next >> 32) as u32);
}

impl FrameBatches {
    pub(crate) const fn new() -> Self {
        Self {
            local: [0; LOCAL_BATCH],
            local_len: 0,
            borrowed: 0,
            first: NONE,
            cur: NONE,
        }
    }

    /// Whether nothing waits. Borrowed frames fill only once the local batch is full, and
    /// a drain empties everything, so the local batch being empty means all are.
    pub(crate) const fn is_empty(&self) -> bool {
        self.local_len == 0
    }

    /// Borrowed frames held now.
    pub(crate) const fn borrowed(&self) -> usize {
        self.borrowed as usize
    }

    /// Items waiting.
    pub(crate) fn len<M: Memory>(&self, memory: &M) -> usize {
        let mut n = self.local_len as usize;
        let mut f = self.first;
        while f != NONE {
            n += read_word(memory, f, 0) as usize;
            f = next_of(memory, f);
        }
        n
    }

    /// Adds `word` (from [`Pending::encode`]), borrowing a batch frame if needed (at most
    /// `max_frames` in all).
    ///
    /// # Errors
    /// [`BatchFull`] when there is no room and no frame may or can be borrowed; nothing
    /// was added.
    pub(crate) fn push<M: Memory>(
        &mut self,
        word: u32,
        memory: &mut M,
        max_frames: usize,
        report: &mut FlushReport,
    ) -> Result<(), BatchFull> {
        if (self.local_len as usize) < LOCAL_BATCH {
            self.local[self.local_len as usize] = word;
            self.local_len += 1;
            return Ok(());
        }
        if self.cur != NONE {
            let n = read_word(memory, self.cur, 0) as usize;
            if n < ENTRIES_PER_FRAME {
                write_word(memory, self.cur, HEADER_WORDS + n, word);
                write_word(memory, self.cur, 0, n as u32 + 1);
                return Ok(());
            }
            let next = next_of(memory, self.cur);
            if next != NONE {
                // A frame kept from before an intermediate flush, empty.
                self.cur = next;
                write_word(memory, next, HEADER_WORDS, word);
                write_word(memory, next, 0, 1);
                return Ok(());
            }
        }
        if self.borrowed as usize >= max_frames {
            return Err(BatchFull {
                alloc_failed: false,
            });
        }
        let Some(pa) = memory.allocate_frames(1, PAGE_SIZE as usize) else {
            report.batch_alloc_failures += 1;
            return Err(BatchFull { alloc_failed: true });
        };
        let frame = pa.as_u64();
        report.batch_frames_borrowed += 1;
        write_word(memory, frame, 0, 1);
        set_next(memory, frame, NONE);
        write_word(memory, frame, 3, MAGIC);
        write_word(memory, frame, HEADER_WORDS, word);
        if self.cur == NONE {
            self.first = frame;
        } else {
            set_next(memory, self.cur, frame);
        }
        self.cur = frame;
        self.borrowed += 1;
        Ok(())
    }

    /// Hands back every waiting item (the flush has completed) and empties the batches;
    /// borrowed frames are kept for reuse.
    pub(crate) fn drain<M: Memory>(&mut self, memory: &mut M, report: &mut FlushReport) {
        for i in 0..self.local_len as usize {
            Pending::decode(self.local[i]).release(memory, report);
        }
        self.local_len = 0;
        let mut f = self.first;
        while f != NONE {
            debug_assert_eq!(read_word(memory, f, 3), MAGIC);
            let n = read_word(memory, f, 0) as usize;
            for i in 0..n {
                let word = read_word(memory, f, HEADER_WORDS + i);
                Pending::decode(word).release(memory, report);
            }
            write_word(memory, f, 0, 0);
            f = next_of(memory, f);
        }
        self.cur = self.first;
    }

    /// Returns every borrowed frame to the allocator. Only when empty (after
    /// [`FrameBatches::drain`]).
    pub(crate) fn return_frames<M: Memory>(&mut self, memory: &mut M) {
        debug_assert!(self.is_empty());
        let mut f = self.first;
        while f != NONE {
            let next = next_of(memory, f);
            memory.free_frames(PhysAddr::new(f), 1);
            f = next;
        }
        self.first = NONE;
        self.cur = NONE;
        self.borrowed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_roundtrips_every_kind() {
        for (i, &size) in SIZES.iter().enumerate() {
            let pa = PhysAddr::new(((i as u64 + 1) << 24) | 0xff_ff00_0000);
            let p = Pending::Mapped { pa, size };
            assert_eq!(Pending::decode(p.encode().unwrap()), p);
        }
        for frames in 1..=MAX_TABLE_FRAMES {
            let p = Pending::Table {
                pa: PhysAddr::new(0x4012_3000),
                frames,
            };
            assert_eq!(Pending::decode(p.encode().unwrap()), p);
        }
    }

    #[test]
    fn encode_refuses_what_does_not_fit() {
        let big = Pending::Mapped {
            pa: PhysAddr::new(1 << 40),
            size: MapSize::Page4K,
        };
        assert_eq!(big.encode(), None);
        let odd = Pending::Mapped {
            pa: PhysAddr::new(0x4000_0800),
            size: MapSize::Page4K,
        };
        assert_eq!(odd.encode(), None);
        for frames in [0, MAX_TABLE_FRAMES + 1] {
            let t = Pending::Table {
                pa: PhysAddr::new(0x4000_0000),
                frames,
            };
            assert_eq!(t.encode(), None);
        }
        let top = Pending::Mapped {
            pa: PhysAddr::new((1 << 40) - 4096),
            size: MapSize::Page4K,
        };
        assert!(top.encode().is_some());
    }
}

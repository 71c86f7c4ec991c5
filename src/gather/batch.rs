//! Frames waiting for the flush: an open *run*, a small on-stack batch, then batches in
//! frames borrowed from the allocator.
//!
//! # Runs
//!
//! Unmapping walks VAs in order, and the frames behind consecutive VAs are often physically
//! consecutive too (a process heap from a contiguous allocation, a linear map, a big
//! buffer). So the gather keeps one *open run*: leaves of one [`MapSize`] whose VAs and
//! frames both follow each other. A leaf that extends the run costs two compares and two
//! adds; anything else closes the run into the batch and opens a new one. A whole run
//! takes three batch words, so a big unmap of contiguous memory needs no batch frame and
//! no early flush, and at the flush it goes back in one [`Memory::release_mapped_run`]
//! call (whose default is one [`Memory::release_mapped`] per leaf). For scattered frames
//! every run has one leaf and the cost is what per-leaf batching costs anyway.
//!
//! # Batch words
//!
//! An entry is two or three 32-bit words. The first holds the frame number (PA >> 12, so
//! PAs below 2^40, all that ARMv7-A can map) in bits 31..4 and a 4-bit code:
//!
//! | code | entry | then |
//! | --- | --- | --- |
//! | 0..=5 | one mapped leaf of that [`MapSize`] | its VA |
//! | 6..=11 | a run of leaves of size `code - 6` | the first VA, the number of leaves |
//! | 12 | table memory | the number of frames |
//!
//! Whatever does not fit (a PA at or past 2^40, a misaligned PA) is never put in a batch:
//! the gather flushes at once and frees it directly (see [`Pending::packable`]).
//!
//! A borrowed batch frame is 1024 words: `[count, next_lo, next_hi, magic]` then
//! [`ENTRIES_PER_FRAME`] words of entries (an entry never straddles two frames).
//! The frames form a singly linked list that is kept across intermediate flushes (emptied,
//! then refilled) and returned to the allocator when the gather ends. The frame being
//! filled is reached through a pointer and a count cached in [`FrameBatches`], not through
//! its header, so appending costs two stores.

use crate::addr::{PhysAddr, VirtAddr, PAGE_SIZE};
use crate::memory::{MappedRun, Memory};
use crate::sink::MapSize;

use super::report::FlushReport;

/// Words in the on-stack batch (sixteen single leaves, or eight leaves and their eight
/// table frames: a small scattered unmap borrows no batch frame).
pub const LOCAL_BATCH: usize = 32;
const WORDS_PER_FRAME: usize = PAGE_SIZE as usize / 4;
const HEADER_WORDS: usize = 4;
/// Entry words one borrowed 4 KiB batch frame holds (a single leaf takes two, a whole run
/// of leaves three).
pub const ENTRIES_PER_FRAME: usize = WORDS_PER_FRAME - HEADER_WORDS;
const NONE: u64 = u64::MAX;
const MAGIC: u32 = 0x6761_7468;

const CODE_BITS: u32 = 4;
const CODE_MASK: u32 = (1 << CODE_BITS) - 1;
const PFN_LIMIT: u64 = 1 << (32 - CODE_BITS);
const RUN_BASE: u32 = 6;
const TABLE_CODE: u32 = 12;

const SIZES: [MapSize; 6] = [
    MapSize::Page4K,
    MapSize::Large64K,
    MapSize::Section1M,
    MapSize::Block2M,
    MapSize::Super16M,
    MapSize::Block1G,
];

const fn size_code(size: MapSize) -> u32 {
    match size {
        MapSize::Page4K => 0,
        MapSize::Large64K => 1,
        MapSize::Section1M => 2,
        MapSize::Block2M => 3,
        MapSize::Super16M => 4,
        MapSize::Block1G => 5,
    }
}

/// One thing to hand back after the flush.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Pending {
    /// `count` mapped leaves of `size`, virtually consecutive from `va` and physically
    /// from `pa`: one [`Memory::release_mapped_run`].
    Mapped {
        va: VirtAddr,
        pa: PhysAddr,
        size: MapSize,
        count: u32,
    },
    /// Table memory: [`Memory::free_frames`].
    Table { pa: PhysAddr, frames: usize },
}

impl Pending {
    /// One mapped leaf.
    pub(crate) const fn leaf(va: VirtAddr, pa: PhysAddr, size: MapSize) -> Self {
        Pending::Mapped {
            va,
            pa,
            size,
            count: 1,
        }
    }

    /// Whether the item can be stored in a batch (a frame number below 2^28, and counts
    /// that fit a word).
    pub(crate) fn packable(self) -> bool {
        let (pa, n) = match self {
            Pending::Mapped { pa, count, .. } => (pa, count as u64),
            Pending::Table { pa, frames } => (pa, frames as u64),
        };
        pa.is_aligned(PAGE_SIZE as u64)
            && pa.as_u64() / (PAGE_SIZE as u64) < PFN_LIMIT
            && n >= 1
            && n <= u32::MAX as u64
    }

    /// The batch words for this item: the first [`Pending::words`] of the array count. The
    /// item must be [`Pending::packable`].
    fn encode(self) -> [u32; 3] {
        let head = |pa: PhysAddr, code: u32| (((pa.as_u64() >> 12) as u32) << CODE_BITS) | code;
        match self {
            Pending::Mapped {
                va,
                pa,
                size,
                count: 1,
            } => [head(pa, size_code(size)), va.as_u32(), 0],
            Pending::Mapped {
                va,
                pa,
                size,
                count,
            } => [head(pa, RUN_BASE + size_code(size)), va.as_u32(), count],
            Pending::Table { pa, frames } => [head(pa, TABLE_CODE), frames as u32, 0],
        }
    }

    /// How many words the entry starting with `head` takes.
    const fn words(head: u32) -> usize {
        let code = head & CODE_MASK;
        if code >= RUN_BASE && code < TABLE_CODE {
            3
        } else {
            2
        }
    }

    /// The item an entry stands for (`rest` holds its words after `head`; words past the
    /// entry's length are not read).
    fn decode(head: u32, rest: [u32; 2]) -> Self {
        let pa = PhysAddr::new((head >> CODE_BITS) as u64 * PAGE_SIZE as u64);
        let code = head & CODE_MASK;
        if code < RUN_BASE {
            Pending::leaf(VirtAddr::new(rest[0]), pa, SIZES[code as usize])
        } else if code < TABLE_CODE {
            Pending::Mapped {
                va: VirtAddr::new(rest[0]),
                pa,
                size: SIZES[(code - RUN_BASE) as usize],
                count: rest[1],
            }
        } else {
            Pending::Table {
                pa,
                frames: rest[0] as usize,
            }
        }
    }

    /// Hands the item back to `memory` and counts it in `report` (the counts saturate).
    /// Only after the flush. Whatever a kernel reported is handed back as reported, even a
    /// range that passes the top of the physical address space (an unpackable item).
    pub(crate) fn release<M: Memory>(self, memory: &mut M, report: &mut FlushReport) {
        match self {
            Pending::Mapped {
                va,
                pa,
                size,
                count,
            } => {
                // One call per run. Only runs of packable leaves, below 2^40, have more
                // than one leaf (an unpackable leaf near 2^64 is released once, as
                // reported).
                memory.release_mapped_run(MappedRun {
                    va,
                    pa,
                    size,
                    count,
                });
                report.leaves_released = report.leaves_released.saturating_add(count);
                report.bytes_released = report
                    .bytes_released
                    .saturating_add(size.bytes() * u64::from(count));
            }
            Pending::Table { pa, frames } => {
                memory.free_table_frames(pa, frames);
                let frames = u32::try_from(frames).unwrap_or(u32::MAX);
                report.table_frames_freed = report.table_frames_freed.saturating_add(frames);
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

/// The open run: leaves of one size whose VAs and frames follow each other.
#[derive(Clone, Copy, Debug)]
struct Run {
    /// Frame number of the first leaf (below 2^28: only packable items are pushed).
    pfn: u32,
    /// VA of the first leaf.
    va: u32,
    size: MapSize,
    count: u32,
    /// Frame number the next leaf must have to extend the run (`pfn + count * pages`,
    /// wrapping: a run whose end passes 2^32 frames is never extended, see `extends`).
    next: u32,
    /// VA the next leaf must have (`va + count * size`, wrapping: a leaf at VA 0 after a
    /// run that ends at 4 GiB does not extend it, since its frame check fails first or
    /// the run is closed by `extend_run`'s VA-wrap test).
    next_va: u32,
}

impl Run {
    fn pending(self) -> Pending {
        Pending::Mapped {
            va: VirtAddr::new(self.va),
            pa: PhysAddr::new(self.pfn as u64 * PAGE_SIZE as u64),
            size: self.size,
            count: self.count,
        }
    }
}

/// The batches of one gather.
#[derive(Debug)]
pub(crate) struct FrameBatches {
    /// The run being extended, not yet in a batch.
    run: Option<Run>,
    local: [u32; LOCAL_BATCH],
    local_len: u8,
    /// Borrowed frames in the list.
    borrowed: u16,
    /// PA of the first borrowed frame, or `NONE`.
    first: u64,
    /// PA of the borrowed frame being filled, or `NONE`.
    cur: u64,
    /// Where `cur` is mapped (an exposed address from [`Memory::phys_to_virt`], kept as an
    /// integer so the gather stays `Send`), and how many entry words it holds; its header
    /// count is written when the frame is left or drained.
    cur_virt: usize,
    cur_len: u16,
}

/// Pointer to word `index` of the batch frame at `frame`.
fn word_ptr<M: Memory>(memory: &M, frame: u64, index: usize) -> *mut u32 {
    debug_assert!(index < WORDS_PER_FRAME);
    let base = memory.phys_to_virt(PhysAddr::new(frame)).as_ptr();
    // SAFETY: `index < WORDS_PER_FRAME`, so the offset stays inside the 4 KiB frame that
    // `phys_to_virt` maps.
    unsafe { base.cast::<u32>().add(index) }
}

/// Reads word `index` of batch frame `frame`.
fn read_word<M: Memory>(memory: &M, frame: u64, index: usize) -> u32 {
    // SAFETY: `frame` is a batch frame this gather borrowed and still holds; the pointer is
    // inside it. Unaligned reads tolerate any mapping `phys_to_virt` returns.
    unsafe { word_ptr(memory, frame, index).read_unaligned() }
}

/// Writes word `index` of batch frame `frame`.
fn write_word<M: Memory>(memory: &M, frame: u64, index: usize, value: u32) {
    // SAFETY: as in `read_word`; nobody else uses the frame while the gather holds it.
    unsafe { word_ptr(memory, frame, index).write_unaligned(value) }
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
            run: None,
            local: [0; LOCAL_BATCH],
            local_len: 0,
            borrowed: 0,
            first: NONE,
            cur: NONE,
            cur_virt: 0,
            cur_len: 0,
        }
    }

    /// Whether nothing waits (no open run, empty on-stack batch; borrowed frames are
    /// emptied together with it).
    pub(crate) const fn is_empty(&self) -> bool {
        self.run.is_none() && self.local_len == 0
    }

    /// Borrowed batch frames held.
    pub(crate) const fn borrowed(&self) -> usize {
        self.borrowed as usize
    }

    /// Entries waiting (a run counts once).
    pub(crate) fn len<M: Memory>(&self, memory: &M) -> usize {
        let mut n = usize::from(self.run.is_some());
        let mut count_words = |words: &mut dyn Iterator<Item = u32>| {
            while let Some(w) = words.next() {
                n += 1;
                for _ in 1..Pending::words(w) {
                    words.next();
                }
            }
        };
        count_words(&mut self.local[..self.local_len as usize].iter().copied());
        let mut f = self.first;
        while f != NONE {
            let used = self.used_words(memory, f);
            count_words(&mut (0..used).map(|i| read_word(memory, f, HEADER_WORDS + i)));
            f = next_of(memory, f);
        }
        n
    }

    /// Entry words used in batch frame `f`.
    fn used_words<M: Memory>(&self, memory: &M, f: u64) -> usize {
        if f == self.cur {
            self.cur_len as usize
        } else {
            read_word(memory, f, 0) as usize
        }
    }

    /// Adds `item` (which must be [`Pending::packable`]). On `Err` nothing changed: the
    /// caller flushes and pushes again.
    pub(crate) fn push<M: Memory>(
        &mut self,
        item: Pending,
        memory: &mut M,
        max_frames: usize,
        report: &mut FlushReport,
    ) -> Result<(), BatchFull> {
        if let Pending::Mapped {
            va,
            pa,
            size,
            count: 1,
        } = item
        {
            if self.extend_run(va, pa, size) {
                return Ok(());
            }
            if let Some(run) = &self.run {
                let closed = run.pending();
                self.store(closed, memory, max_frames, report)?;
            }
            let pfn = (pa.as_u64() >> 12) as u32;
            self.run = Some(Run {
                pfn,
                va: va.as_u32(),
                size,
                count: 1,
                next: pfn.wrapping_add((size.bytes() >> 12) as u32),
                next_va: va.as_u32().wrapping_add(size.bytes() as u32),
            });
            return Ok(());
        }
        self.store(item, memory, max_frames, report)
    }

    /// Counts one mapped leaf into the open run if it continues it (same size, the next
    /// VA and the next frame, no VA wrap, a frame number a batch word can
    /// hold: what a leaf needs to be [`Pending::packable`], given that the run's first leaf
    /// was). Returns whether it did; on `false` nothing changed. The per-leaf fast path of
    /// a gather.
    #[inline(always)]
    pub(crate) fn extend_run(&mut self, va: VirtAddr, pa: PhysAddr, size: MapSize) -> bool {
        let pa = pa.as_u64();
        let va = va.as_u32();
        match &mut self.run {
            Some(run)
                if pa < PFN_LIMIT * PAGE_SIZE as u64
                    && (pa >> 12) as u32 == run.next
                    && va == run.next_va
                    && va != 0
                    && pa & (PAGE_SIZE as u64 - 1) == 0
                    && run.size == size =>
            {
                // No count check: a run never wraps the 32-bit VA space (`va != 0`), so
                // it holds at most 2^20 leaves and `count` cannot overflow.
                run.count += 1;
                run.next = run.next.wrapping_add((size.bytes() >> 12) as u32);
                run.next_va = va.wrapping_add(size.bytes() as u32);
                true
            }
            _ => false,
        }
    }

    /// Appends an entry to the batches. On `Err` nothing changed.
    fn store<M: Memory>(
        &mut self,
        item: Pending,
        memory: &mut M,
        max_frames: usize,
        report: &mut FlushReport,
    ) -> Result<(), BatchFull> {
        let words = item.encode();
        let need = Pending::words(words[0]);
        let local = self.local_len as usize;
        if local + need <= LOCAL_BATCH {
            // Word by word (a slice copy of two or three words is a `memcpy` call).
            for (k, &w) in words.iter().enumerate().take(need) {
                self.local[local + k] = w;
            }
            self.local_len += need as u8;
            return Ok(());
        }
        if self.cur == NONE || self.cur_len as usize + need > ENTRIES_PER_FRAME {
            self.next_frame(memory, max_frames, report)?;
        }
        let at = HEADER_WORDS + self.cur_len as usize;
        let base = core::ptr::with_exposed_provenance_mut::<u32>(self.cur_virt);
        for (k, &w) in words[..need].iter().enumerate() {
            // SAFETY: `cur_virt` maps the batch frame `cur` this gather holds (set from
            // `phys_to_virt` in `next_frame`); `at + need <= WORDS_PER_FRAME`.
            unsafe { base.add(at + k).write_unaligned(w) };
        }
        self.cur_len += need as u16;
        Ok(())
    }

    /// Makes `cur` a batch frame with room: the next one in the list, or a new one.
    fn next_frame<M: Memory>(
        &mut self,
        memory: &mut M,
        max_frames: usize,
        report: &mut FlushReport,
    ) -> Result<(), BatchFull> {
        if self.cur != NONE {
            let next = next_of(memory, self.cur);
            if next != NONE {
                write_word(memory, self.cur, 0, self.cur_len as u32);
                self.enter(memory, next);
                return Ok(());
            }
        }
        if self.borrowed as usize >= max_frames {
            return Err(BatchFull {
                alloc_failed: false,
            });
        }
        let Some(pa) = memory.allocate_frames(1, PAGE_SIZE as usize) else {
            report.batch_alloc_failures = report.batch_alloc_failures.saturating_add(1);
            return Err(BatchFull { alloc_failed: true });
        };
        let frame = pa.as_u64();
        report.batch_frames_borrowed = report.batch_frames_borrowed.saturating_add(1);
        set_next(memory, frame, NONE);
        write_word(memory, frame, 3, MAGIC);
        if self.cur == NONE {
            self.first = frame;
        } else {
            write_word(memory, self.cur, 0, self.cur_len as u32);
            set_next(memory, self.cur, frame);
        }
        self.borrowed += 1;
        self.enter(memory, frame);
        Ok(())
    }

    /// Starts filling batch frame `frame` from its first entry word.
    fn enter<M: Memory>(&mut self, memory: &M, frame: u64) {
        self.cur = frame;
        self.cur_virt = memory
            .phys_to_virt(PhysAddr::new(frame))
            .as_ptr()
            .expose_provenance();
        self.cur_len = 0;
    }

    /// Hands every waiting item back (only after the flush that covers them), leaving the
    /// borrowed frames empty for reuse.
    pub(crate) fn drain<M: Memory>(&mut self, memory: &mut M, report: &mut FlushReport) {
        if let Some(run) = self.run.take() {
            run.pending().release(memory, report);
        }
        // Every entry leaves the batches *before* it is released, so a kernel callback that
        // panics (and unwinds into a later drain) can leak entries but never free one twice.
        let local = self.local;
        let local_len = core::mem::take(&mut self.local_len) as usize;
        release_words(&local[..local_len], memory, report);
        let mut f = self.first;
        while f != NONE {
            debug_assert_eq!(read_word(memory, f, 3), MAGIC);
            let used = self.used_words(memory, f);
            write_word(memory, f, 0, 0);
            if f == self.cur {
                self.cur_len = 0;
            }
            let mut i = 0;
            while i < used {
                let head = read_word(memory, f, HEADER_WORDS + i);
                // The words an entry has, within what the frame holds (a frame never
                // holds part of an entry; the bound only keeps a corrupt count inside it).
                let n = Pending::words(head).min(used - i);
                let word = |k: usize| {
                    if k < n {
                        read_word(memory, f, HEADER_WORDS + i + k)
                    } else {
                        0
                    }
                };
                let rest = [word(1), word(2)];
                i += n;
                Pending::decode(head, rest).release(memory, report);
            }
            f = next_of(memory, f);
        }
        if self.first != NONE {
            let first = self.first;
            self.enter(memory, first);
        }
    }

    /// Returns every borrowed frame to the allocator (the batches must be drained).
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
        self.cur_virt = 0;
        self.cur_len = 0;
        self.borrowed = 0;
    }
}

/// Releases the entries in `words` (the on-stack batch), indexed directly (no iterator
/// object per word); a truncated last entry reads zeros for its missing words.
fn release_words<M: Memory>(words: &[u32], memory: &mut M, report: &mut FlushReport) {
    let mut i = 0;
    while i < words.len() {
        let head = words[i];
        let n = Pending::words(head);
        let at = |k: usize| words.get(i + k).copied().unwrap_or(0);
        // A two-word entry ignores its second rest word (the next entry's head here).
        let rest = [at(1), at(2)];
        i += n;
        Pending::decode(head, rest).release(memory, report);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(p: Pending) -> Pending {
        let w = p.encode();
        let want = match p {
            Pending::Mapped { count: 1, .. } | Pending::Table { .. } => 2,
            Pending::Mapped { .. } => 3,
        };
        assert_eq!(Pending::words(w[0]), want);
        Pending::decode(w[0], [w[1], w[2]])
    }

    const VA: VirtAddr = VirtAddr::new(0xfff0_0000);

    #[test]
    fn encode_roundtrips_every_kind() {
        for (i, &size) in SIZES.iter().enumerate() {
            let pa = PhysAddr::new(((i as u64 + 1) << 24) | 0xff_ff00_0000);
            let p = Pending::leaf(VA, pa, size);
            assert_eq!(roundtrip(p), p);
            let run = Pending::Mapped {
                va: VA,
                pa,
                size,
                count: 77_000,
            };
            assert_eq!(roundtrip(run), run);
        }
        for frames in [1, 4, 10, 1000] {
            let p = Pending::Table {
                pa: PhysAddr::new(0x4012_3000),
                frames,
            };
            assert_eq!(roundtrip(p), p);
        }
    }

    /// What the backend and the memory saw, in order.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum Event {
        Complete,
        Released(u32, u64, usize),
        Freed(u64, usize),
    }

    type Log = std::rc::Rc<std::cell::RefCell<std::vec::Vec<Event>>>;

    /// A backend that logs its completions.
    struct Completions(Log);

    impl crate::TlbBackend for Completions {
        fn prepare(&mut self) {}
        fn invalidate_va(&mut self, _: crate::VirtAddr, _: crate::Asid) {}
        fn invalidate_va_all_asids(&mut self, _: crate::VirtAddr) {}
        fn invalidate_asid(&mut self, _: crate::Asid) {}
        fn invalidate_all(&mut self) {}
        fn invalidate_branch_predictor(&mut self) {}
        fn complete(&mut self) {
            self.0.borrow_mut().push(Event::Complete);
        }
        fn counters(&self) -> crate::TlbCounters {
            crate::TlbCounters::default()
        }
    }

    /// A memory that lends no batch frame and logs what comes back.
    struct Returns(Log);

    // SAFETY: never allocates, so `phys_to_virt` is never used on its behalf.
    unsafe impl Memory for Returns {
        fn allocate_frames(&mut self, _: usize, _: usize) -> Option<PhysAddr> {
            None
        }
        fn free_frames(&mut self, pa: PhysAddr, frames: usize) {
            self.0.borrow_mut().push(Event::Freed(pa.as_u64(), frames));
        }
        fn phys_to_virt(&self, _: PhysAddr) -> core::ptr::NonNull<u8> {
            core::ptr::NonNull::dangling()
        }
        fn release_mapped(&mut self, va: VirtAddr, pa: PhysAddr, bytes: usize) {
            self.0
                .borrow_mut()
                .push(Event::Released(va.as_u32(), pa.as_u64(), bytes));
        }
    }

    #[test]
    fn items_at_the_top_of_the_address_space_are_released_after_a_flush() {
        use crate::sink::UnmapSink;
        // What a kernel may report (directly, or through a bad memory model): leaves and
        // table memory whose end passes 2^64, counts that fit no word. None can be packed;
        // each must still go back exactly once, after a completed flush, without a panic.
        let top: u64 = !0xfff;
        let items = [
            (top, MapSize::Page4K),
            (top & !((1 << 30) - 1), MapSize::Block1G),
            (top - (1 << 20), MapSize::Block2M),
            (1 << 40, MapSize::Super16M),
        ];
        let log = Log::default();
        let in_flight = crate::InFlight::new();
        let mut g = crate::MmuGather::new(
            crate::Scope::Kernel,
            Completions(log.clone()),
            Returns(log.clone()),
            &in_flight,
        );
        for (i, &(pa, size)) in items.iter().enumerate() {
            g.leaf_cleared(crate::ClearedLeaf {
                va: crate::VirtAddr::new(0x1000_0000 + (i as u32) * 0x1000),
                size,
                pa: PhysAddr::new(pa),
                global: true,
                executable: false,
            });
        }
        g.table_memory_freed(PhysAddr::new(top), 1);
        g.table_memory_freed(PhysAddr::new(0x4000_0000), usize::MAX);
        g.table_memory_freed(PhysAddr::new(top), usize::MAX);
        let report = g.finish();
        let log = log.borrow();
        let mut want: std::vec::Vec<Event> = items
            .iter()
            .enumerate()
            .map(|(i, &(pa, size))| {
                Event::Released(0x1000_0000 + (i as u32) * 0x1000, pa, size.bytes() as usize)
            })
            .collect();
        want.extend([
            Event::Freed(top, 1),
            Event::Freed(0x4000_0000, usize::MAX),
            Event::Freed(top, usize::MAX),
        ]);
        for w in &want {
            let at = log.iter().position(|e| e == w).expect("released");
            assert_eq!(log.iter().filter(|e| *e == w).count(), 1, "{w:?} twice");
            assert!(
                log[..at].contains(&Event::Complete),
                "{w:?} released before a flush completed: {log:?}"
            );
        }
        assert_eq!(report.leaves_released, items.len() as u32);
        assert_eq!(
            report.table_frames_freed,
            u32::MAX,
            "saturated, not wrapped"
        );
    }

    #[test]
    fn release_counts_saturate() {
        let log = Log::default();
        let mut mem = Returns(log.clone());
        let mut report = FlushReport {
            leaves_released: u32::MAX - 1,
            bytes_released: u64::MAX - 4096,
            table_frames_freed: u32::MAX - 1,
            ..FlushReport::default()
        };
        let run = Pending::Mapped {
            va: VirtAddr::new(0x2000_0000),
            pa: PhysAddr::new(0x4000_0000),
            size: MapSize::Page4K,
            count: 3,
        };
        run.release(&mut mem, &mut report);
        Pending::Table {
            pa: PhysAddr::new(0x5000_0000),
            frames: 2,
        }
        .release(&mut mem, &mut report);
        assert_eq!(report.leaves_released, u32::MAX);
        assert_eq!(report.bytes_released, u64::MAX);
        assert_eq!(report.table_frames_freed, u32::MAX);
        assert_eq!(
            *log.borrow(),
            [
                Event::Released(0x2000_0000, 0x4000_0000, 4096),
                Event::Released(0x2000_1000, 0x4000_1000, 4096),
                Event::Released(0x2000_2000, 0x4000_2000, 4096),
                Event::Freed(0x5000_0000, 2),
            ]
        );
    }

    /// A kernel-scope gather over [`Runs`], logging into `log`.
    fn runs_gather<'a>(
        log: &std::rc::Rc<std::cell::RefCell<std::vec::Vec<std::string::String>>>,
        in_flight: &'a crate::InFlight,
    ) -> crate::MmuGather<'a, Completions, Runs> {
        crate::MmuGather::new(
            crate::Scope::Kernel,
            Completions(Log::default()),
            Runs(log.clone()),
            in_flight,
        )
    }

    /// A memory that frees runs in one call and tells table memory apart, and logs it.
    struct Runs(std::rc::Rc<std::cell::RefCell<std::vec::Vec<std::string::String>>>);

    // SAFETY: never allocates, so `phys_to_virt` is never used on its behalf.
    unsafe impl Memory for Runs {
        fn allocate_frames(&mut self, _: usize, _: usize) -> Option<PhysAddr> {
            None
        }
        fn free_frames(&mut self, pa: PhysAddr, frames: usize) {
            self.0
                .borrow_mut()
                .push(std::format!("frames {pa} x{frames}"));
        }
        fn free_table_frames(&mut self, pa: PhysAddr, frames: usize) {
            self.0
                .borrow_mut()
                .push(std::format!("tables {pa} x{frames}"));
        }
        fn phys_to_virt(&self, _: PhysAddr) -> core::ptr::NonNull<u8> {
            core::ptr::NonNull::dangling()
        }
        fn release_mapped_run(&mut self, run: MappedRun) {
            self.0.borrow_mut().push(std::format!(
                "run {} -> {} {:?} x{}",
                run.va,
                run.pa,
                run.size,
                run.count
            ));
        }
    }

    #[test]
    fn runs_need_consecutive_vas_and_frames_and_go_back_in_one_call() {
        use crate::sink::UnmapSink;
        let log = std::rc::Rc::new(std::cell::RefCell::new(std::vec::Vec::new()));
        let in_flight = crate::InFlight::new();
        let mut g = runs_gather(&log, &in_flight);
        let mut leaf = |va: u32, pa: u64, size: MapSize| {
            g.leaf_cleared(crate::ClearedLeaf {
                va: VirtAddr::new(va),
                size,
                pa: PhysAddr::new(pa),
                global: true,
                executable: false,
            })
        };
        // 300 pages, both consecutive: one run.
        for i in 0..300u32 {
            leaf(
                0x1000_0000 + i * 4096,
                0x4000_0000 + u64::from(i) * 4096,
                MapSize::Page4K,
            );
        }
        // The next frame but not the next VA: a new run, released with its own VA.
        leaf(0x2000_0000, 0x4000_0000 + 300 * 4096, MapSize::Page4K);
        leaf(0x2000_1000, 0x4000_0000 + 301 * 4096, MapSize::Page4K);
        // The next VA but not the next frame.
        leaf(0x2000_2000, 0x5000_0000, MapSize::Page4K);
        // Sections: consecutive in both.
        leaf(0x3000_0000, 0x6000_0000, MapSize::Section1M);
        leaf(0x3010_0000, 0x6010_0000, MapSize::Section1M);
        // The last page below 4 GiB, then VA 0 with the next frame: not one run.
        leaf(0xffff_f000, 0x7000_0000, MapSize::Page4K);
        leaf(0x0000_0000, 0x7000_1000, MapSize::Page4K);
        g.table_memory_freed(PhysAddr::new(0x8000_0000), 1);
        let report = g.finish();
        assert_eq!(report.leaves_released, 300 + 2 + 1 + 2 + 2);
        let want = [
            "run 0x10000000 -> 0x40000000 Page4K x300",
            "run 0x20000000 -> 0x4012c000 Page4K x2",
            "run 0x20002000 -> 0x50000000 Page4K x1",
            "run 0x30000000 -> 0x60000000 Section1M x2",
            "run 0xfffff000 -> 0x70000000 Page4K x1",
            "run 0x00000000 -> 0x70001000 Page4K x1",
            "tables 0x80000000 x1",
        ];
        let got = log.borrow();
        for w in want {
            assert_eq!(got.iter().filter(|e| *e == w).count(), 1, "{w} in {got:?}");
        }
        assert_eq!(got.len(), want.len(), "{got:?}");
    }

    #[test]
    fn default_run_release_is_one_release_mapped_per_leaf_with_its_va() {
        let log = Log::default();
        let mut mem = Returns(log.clone());
        mem.release_mapped_run(MappedRun {
            va: VirtAddr::new(0xffe0_0000),
            pa: PhysAddr::new(0x1_0000_0000),
            size: MapSize::Section1M,
            count: 2,
        });
        assert_eq!(
            *log.borrow(),
            [
                Event::Released(0xffe0_0000, 0x1_0000_0000, 1 << 20),
                Event::Released(0xfff0_0000, 0x1_0010_0000, 1 << 20),
            ]
        );
    }

    #[test]
    fn a_run_stops_below_the_first_frame_a_batch_word_cannot_hold() {
        use crate::sink::UnmapSink;
        let log = std::rc::Rc::new(std::cell::RefCell::new(std::vec::Vec::new()));
        let in_flight = crate::InFlight::new();
        let mut g = runs_gather(&log, &in_flight);
        // The last two frames below 2^40, then the frame at 2^40 (a PA no batch word
        // holds), at consecutive VAs.
        for i in 0..3u32 {
            g.leaf_cleared(crate::ClearedLeaf {
                va: VirtAddr::new(0x1000_0000 + i * 4096),
                size: MapSize::Page4K,
                pa: PhysAddr::new((1 << 40) - 2 * 4096 + u64::from(i) * 4096),
                global: true,
                executable: false,
            });
        }
        let report = g.finish();
        assert_eq!(report.leaves_released, 3);
        // The frame at 2^40 is not packable: it ends the run of two before it, and is
        // freed on its own, right after the flush that frees the run.
        assert_eq!(report.flushes, 1);
        assert_eq!(
            *log.borrow(),
            [
                "run 0x10000000 -> 0xffffffe000 Page4K x2",
                "run 0x10002000 -> 0x10000000000 Page4K x1",
            ]
        );
    }

    #[test]
    fn is_empty_until_an_item_waits() {
        let mut b = FrameBatches::new();
        let mut mem = Returns(Log::default());
        let mut report = FlushReport::default();
        assert!(b.is_empty());
        // A single leaf opens the run (the on-stack batch stays empty).
        let leaf = Pending::leaf(VA, PhysAddr::new(0x4000_0000), MapSize::Page4K);
        assert!(b.push(leaf, &mut mem, 0, &mut report).is_ok());
        assert!(!b.is_empty());
        // A leaf that does not continue the run closes it into the on-stack batch.
        let other = Pending::leaf(
            VirtAddr::new(0x10),
            PhysAddr::new(0x5000_0000),
            MapSize::Page4K,
        );
        assert!(b.push(other, &mut mem, 0, &mut report).is_ok());
        b.drain(&mut mem, &mut report);
        assert!(b.is_empty());
        assert_eq!(report.leaves_released, 2);
        // A table goes straight to the on-stack batch, with no run open.
        let table = Pending::Table {
            pa: PhysAddr::new(0x6000_0000),
            frames: 1,
        };
        assert!(b.push(table, &mut mem, 0, &mut report).is_ok());
        assert!(!b.is_empty());
        b.drain(&mut mem, &mut report);
        assert!(b.is_empty());
    }

    #[test]
    fn packable_refuses_what_does_not_fit() {
        assert!(!Pending::leaf(VA, PhysAddr::new(1 << 40), MapSize::Page4K).packable());
        assert!(!Pending::leaf(VA, PhysAddr::new(0x4000_0800), MapSize::Page4K).packable());
        let none = Pending::Table {
            pa: PhysAddr::new(0x4000_0000),
            frames: 0,
        };
        assert!(!none.packable());
        assert!(Pending::leaf(VA, PhysAddr::new((1 << 40) - 4096), MapSize::Page4K).packable());
    }
}

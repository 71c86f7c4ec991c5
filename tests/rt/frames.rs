//! Physical frame allocator over the RAM the image does not use, behind a `spin::Mutex`.
//!
//! It counts frames out and in, can be told to fail the Nth request (to test that nothing
//! is lost on allocation failure), and calls an optional hook the moment a frame is handed
//! back, which is where a test checks that the TLB no longer reaches it.

use core::ptr::NonNull;

use armv7_mm::{Memory, PhysAddr, PAGE_SIZE};
use spin::Mutex;

/// Start of RAM on the board ([`crate::board::RAM_BASE`]).
pub const RAM_BASE: u64 = crate::board::RAM_BASE;
/// Largest RAM size the bitmap covers.
pub const MAX_RAM: u64 = 1 << 30;
const MAX_FRAMES: usize = (MAX_RAM / PAGE_SIZE as u64) as usize;
const WORDS: usize = MAX_FRAMES / 32;

/// Called with `(pa, count)` when frames come back, before they are marked free.
pub type FreeHook = fn(PhysAddr, usize);

struct State {
    /// One bit per frame of RAM; set = in use (or not ours).
    used: [u32; WORDS],
    first: usize,
    limit: usize,
    next: usize,
    out: usize,
    allocs: u64,
    frees: u64,
    fail_at: Option<u64>,
    hook: Option<FreeHook>,
}

static STATE: Mutex<State> = Mutex::new(State {
    used: [0; WORDS],
    first: 0,
    limit: 0,
    next: 0,
    out: 0,
    allocs: 0,
    frees: 0,
    fail_at: None,
    hook: None,
});

/// Allocator statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Frames currently allocated.
    pub outstanding: usize,
    /// Successful allocation calls so far.
    pub allocs: u64,
    /// Free calls so far.
    pub frees: u64,
    /// Frames available in total.
    pub total: usize,
}

extern "C" {
    static __image_end: u8;
}

pub(crate) fn init(ram_size: u64) {
    let end = core::ptr::addr_of!(__image_end) as u64;
    let mut s = STATE.lock();
    let ram = ram_size.min(MAX_RAM);
    s.first = ((end - RAM_BASE) / PAGE_SIZE as u64) as usize;
    s.limit = (ram / PAGE_SIZE as u64) as usize;
    s.next = s.first;
}

fn is_used(s: &State, i: usize) -> bool {
    s.used[i / 32] & (1 << (i % 32)) != 0
}

fn set_used(s: &mut State, i: usize, used: bool) {
    if used {
        s.used[i / 32] |= 1 << (i % 32);
    } else {
        s.used[i / 32] &= !(1 << (i % 32));
    }
}

/// Allocates `count` contiguous frames aligned to `align` bytes.
pub fn alloc(count: usize, align: usize) -> Option<PhysAddr> {
    let mut s = STATE.lock();
    if let Some(n) = s.fail_at {
        if s.allocs + 1 >= n {
            s.fail_at = None;
            return None;
        }
    }
    let step = (align / PAGE_SIZE as usize).max(1);
    // Frame index i is RAM_BASE + i*4K. RAM_BASE need not be aligned to `align` (vexpress:
    // 0x6000_0000), so the aligned indices are those congruent to `skew` modulo `step`.
    let base_frame = (RAM_BASE / PAGE_SIZE as u64) as usize;
    let skew = (step - base_frame % step) % step;
    let up = |i: usize| (i + step - 1 - skew) / step * step + skew;
    let mut tries = 0;
    let span = s.limit - s.first;
    let mut i = up(s.next);
    while tries <= span + step {
        if i + count > s.limit {
            i = up(s.first);
        }
        if (i..i + count).all(|j| !is_used(&s, j)) {
            for j in i..i + count {
                set_used(&mut s, j, true);
            }
            s.next = i + count;
            s.out += count;
            s.allocs += 1;
            return Some(PhysAddr::new(RAM_BASE + (i as u64) * PAGE_SIZE as u64));
        }
        i += step;
        tries += step;
    }
    None
}

/// Returns frames. Panics on a double free or a frame that is not ours: both are bugs the
/// tests exist to find.
pub fn free(pa: PhysAddr, count: usize) {
    let hook = STATE.lock().hook;
    if let Some(h) = hook {
        h(pa, count);
    }
    let mut s = STATE.lock();
    let first = ((pa.as_u64() - RAM_BASE) / PAGE_SIZE as u64) as usize;
    for i in first..first + count {
        assert!(
            i >= s.first && i < s.limit && is_used(&s, i),
            "double free or foreign frame {:#x}",
            RAM_BASE + (i as u64) * PAGE_SIZE as u64
        );
        set_used(&mut s, i, false);
    }
    s.out -= count;
    s.frees += 1;
}

/// Current statistics.
pub fn stats() -> Stats {
    let s = STATE.lock();
    Stats {
        outstanding: s.out,
        allocs: s.allocs,
        frees: s.frees,
        total: s.limit - s.first,
    }
}

/// Makes the `n`th allocation from now fail once (1 = the next one); `None` disarms.
pub fn fail_nth(n: Option<u64>) {
    let mut s = STATE.lock();
    s.fail_at = n.map(|n| s.allocs + n);
}

/// Installs (or removes) the hook called as frames are handed back.
pub fn set_free_hook(hook: Option<FreeHook>) {
    STATE.lock().hook = hook;
}

/// The runtime's [`Memory`]: this allocator, with RAM identity-mapped (PA == VA).
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelMemory;

// SAFETY: frames come from the bitmap allocator over RAM the image does not use (never
// handed out twice while allocated), and RAM is identity-mapped (normal, write-back) in
// every map the tests run with, so PA == VA reaches the memory the walker reads.
unsafe impl Memory for KernelMemory {
    fn allocate_frames(&mut self, count: usize, align: usize) -> Option<PhysAddr> {
        alloc(count, align)
    }
    fn free_frames(&mut self, pa: PhysAddr, count: usize) {
        free(pa, count)
    }
    #[inline]
    fn phys_to_virt(&self, pa: PhysAddr) -> NonNull<u8> {
        NonNull::new(pa.as_u64() as usize as *mut u8).expect("RAM is never at 0")
    }
    /// A run of consecutive frames goes back in one call, as a bitmap allocator frees.
    fn release_mapped_run(&mut self, run: armv7_mm::MappedRun) {
        free(run.pa, (run.bytes() / 4096) as usize)
    }
}

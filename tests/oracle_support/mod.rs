//! Shared by the walker oracle boot tests (`walker_oracle`, `walker_oracle_lpae`): the
//! seeded random source, the mismatch tally, the comparison of one VA (intent, software
//! walk, hardware walk through a flavour of `ATS1C**`/`PAR`), the whole-TLB flush between
//! phases, and a sink that counts leaves and keeps freed table frames until the caller's
//! flush; also the pieces both build their random mappings and teardown from (seed,
//! memory types, pattern-filled frames, the sampled comparison, the kernel's intents).

#![allow(dead_code)]

use core::fmt::Debug;

use armv7_mm::arch::barrier::{dsb_ish, dsb_ishst, isb};
use armv7_mm::arch::tlbi;
use armv7_mm::short::{Access, Attributes, MemoryType};
use armv7_mm::table::Translation;
use armv7_mm::{ClearedLeaf, PhysAddr, UnmapSink, VirtAddr, VirtRange};
use rt::frames::RAM_BASE;
use rt::println;

/// Most mappings one run asks for.
pub const MAX_MAPPINGS: usize = 320;
/// VAs sampled per run.
pub const MAX_VAS: usize = 6000;

/// One mapping the test asked for.
#[derive(Clone, Copy)]
pub struct Intent {
    pub va: u64,
    pub len: u64,
    pub pa: u64,
    pub attrs: Attributes,
    /// Frames allocated for it (`None`: made-up PA never accessed, or RAM the test owns).
    pub backed: Option<(PhysAddr, usize)>,
    /// Data may be read through it.
    pub readable: bool,
}

impl Intent {
    /// One past its last VA.
    pub fn end(&self) -> u64 {
        self.va + self.len
    }
}

/// The mappings asked for so far.
pub struct World {
    pub intents: [Option<Intent>; MAX_MAPPINGS],
    pub count: usize,
}

impl World {
    /// Nothing asked for yet.
    pub const fn new() -> Self {
        World {
            intents: [None; MAX_MAPPINGS],
            count: 0,
        }
    }

    /// What the intent says `va` maps to: PA and attributes.
    pub fn lookup(&self, va: u32) -> Option<(u64, Attributes)> {
        let v = u64::from(va);
        self.intents[..self.count]
            .iter()
            .flatten()
            .find_map(|i| (v >= i.va && v < i.end()).then(|| (i.pa + (v - i.va), i.attrs)))
    }

    /// Hands back the frames allocated for the mappings.
    pub fn free_backed(&self) {
        for i in self.intents[..self.count].iter().flatten() {
            if let Some((pa, frames)) = i.backed {
                rt::frames::free(pa, frames);
            }
        }
    }

    /// Records one more mapping (ignored past [`MAX_MAPPINGS`]).
    pub fn push(&mut self, i: Intent) {
        if self.count < MAX_MAPPINGS {
            self.intents[self.count] = Some(i);
            self.count += 1;
        }
    }
}

/// Fills `out` with VAs to compare: both sides of both edges of every intent (with offsets
/// inside the page), random pages inside (64 in a GiB or more, else one) and the middle,
/// random VAs over the whole space, and some in the `ram_probe` bytes from the start of
/// RAM and around the UART. Returns how many.
pub fn sample_vas(world: &World, rng: &mut Rng, out: &mut [u32; MAX_VAS], ram_probe: u64) -> usize {
    let mut n = 0;
    let mut push = |va: u64, n: &mut usize| {
        if va < 1 << 32 && *n < MAX_VAS {
            out[*n] = va as u32;
            *n += 1;
        }
    };
    for i in world.intents[..world.count].iter().flatten() {
        let (s, e) = (i.va, i.end());
        for va in [s.wrapping_sub(4096), s, e - 4096, e] {
            push(va, &mut n);
            push(va + 4092, &mut n);
        }
        for _ in 0..if i.len >= 1 << 30 { 64 } else { 1 } {
            push(s + rng.below(i.len / 4096) * 4096 + rng.below(4096), &mut n);
        }
        push(s + ((i.len / 2) & !0xfff), &mut n);
    }
    while n < MAX_VAS - 200 {
        push(rng.next() & 0xffff_ffff, &mut n);
    }
    for k in 0..100 {
        push(RAM_BASE + rng.below(ram_probe), &mut n);
        push(UART - 8192 + k * 256, &mut n);
    }
    n
}

/// The UART page both kernels map.
pub const UART: u64 = 0x0900_0000;

/// A xorshift generator: the same seed gives the same mappings and samples.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Checks and mismatches; the first dozen mismatches are printed (with "MISMATCH").
pub struct Tally {
    pub checked: u64,
    pub mismatches: u64,
    pub printed: u32,
}

impl Tally {
    /// Nothing checked yet.
    pub const fn new() -> Self {
        Tally {
            checked: 0,
            mismatches: 0,
            printed: 0,
        }
    }

    /// Counts (and maybe prints) one mismatch.
    pub fn mismatch(&mut self, args: core::fmt::Arguments) {
        self.mismatches += 1;
        if self.printed < 12 {
            self.printed += 1;
            println!("    MISMATCH {}", args);
        }
    }
}

/// Invalidates this CPU's whole TLB and branch predictor, completed.
pub fn flush_all() {
    dsb_ishst();
    tlbi::tlbiall(0);
    tlbi::bpiall(0);
    dsb_ish();
    isb();
}

/// Counts leaves; frees table frames only after the caller's flush.
pub struct Rec {
    pub leaves: u32,
    tables: [Option<PhysAddr>; 512],
    ntables: usize,
}

impl Rec {
    /// Nothing recorded.
    pub fn new() -> Self {
        Rec {
            leaves: 0,
            tables: [None; 512],
            ntables: 0,
        }
    }

    /// Frees the table frames recorded (after the caller's flush).
    pub fn free_tables(&mut self) {
        for t in self.tables[..self.ntables].iter_mut() {
            if let Some(pa) = t.take() {
                rt::frames::free(pa, 1);
            }
        }
        self.ntables = 0;
    }
}

impl UnmapSink for Rec {
    // Every change here is followed by `flush_all`; break-before-make (block splits,
    // replicated leaves) flushes at once.
    fn leaf_changed(&mut self, _: armv7_mm::ChangedLeaf) {}
    fn flush_now(&mut self) {
        flush_all();
    }
    fn leaf_cleared(&mut self, _leaf: ClearedLeaf) {
        self.leaves += 1;
    }
    fn table_unlinked(&mut self, _va: VirtAddr, _span: u64, _global: bool) {}
    fn table_memory_freed(&mut self, pa: PhysAddr, frames: usize) {
        if frames == 1 && self.ntables < self.tables.len() {
            self.tables[self.ntables] = Some(pa);
            self.ntables += 1;
        } else {
            println!("    table memory {} x{} not recorded", pa, frames);
        }
    }
}

/// An `ATS1C**` operation: (function, PL0?, write?, name).
pub type AtsOp<R> = (fn(u32) -> R, bool, bool, &'static str);

/// One flavour of the hardware oracle: the four `ATS1C**` operations (function, PL0?,
/// write?, name) with their raw `PAR`, its decoding, what the hardware must answer for a
/// software translation under one permission check, and whether an answer matches.
pub struct Oracle<R, P, E> {
    pub ops: [AtsOp<R>; 4],
    pub decode: fn(R) -> P,
    pub expected: fn(Option<&Translation>, bool, bool) -> E,
    pub matches: fn(E, P) -> bool,
}

/// Checks one sampled VA: the intent `want` against `translate`'s answer `t`; then, after
/// falsifying `t` once if the `corrupt` variant asks for it (`answer`: the output address;
/// `perm`: user RW reported as kernel RW; both only where the intent check cannot see
/// it, so only the hardware comparison can catch them), `t` against the hardware's four
/// answers.
#[allow(clippy::too_many_arguments)]
pub fn compare_va<R, P: Copy + Debug, E: Copy + Debug>(
    oracle: &Oracle<R, P, E>,
    tally: &mut Tally,
    va: u32,
    mut t: Option<Translation>,
    want: Option<(u64, Attributes)>,
    corrupt: Option<&str>,
    corrupted: &mut bool,
    tag: &str,
) {
    let got = t.map(|t| (t.pa.as_u64(), t.mapping.attrs));
    if want != got {
        tally.mismatch(format_args!(
            "{:#010x}: intent {:x?} translate {:x?}",
            va, want, got
        ));
    }
    if !*corrupted {
        if let Some(t) = t.as_mut() {
            let a = t.mapping.attrs.access;
            if corrupt == Some("answer") && a.allows(false, false) {
                t.pa = PhysAddr::new(t.pa.as_u64() ^ 0x1000_0000);
                *corrupted = true;
            } else if corrupt == Some("perm") && a == Access::UserRw {
                t.mapping.attrs.access = Access::KernelRw;
                *corrupted = true;
            }
            if *corrupted {
                println!("{}: corrupted translate's answer for {:#010x}", tag, va);
            }
        }
    }
    for (op, user, write, name) in oracle.ops {
        let par = (oracle.decode)(op(va));
        let e = (oracle.expected)(t.as_ref(), user, write);
        tally.checked += 1;
        if !(oracle.matches)(e, par) {
            tally.mismatch(format_args!(
                "{:#010x} {}: translate {:x?}, PAR {:x?}",
                va, name, e, par
            ));
        }
    }
}

// ---- Pieces both kernels build their runs from -------------------------------------------

/// XORed into a frame's address to make the words [`fill_pattern`] writes.
pub const MAGIC: u32 = 0x5a5a_c3c3;

/// The seed from the command line (`seed=`) or `default`; printed with how to replay it.
pub fn seed(default: u64, tag: &str) -> u64 {
    let seed = rt::arg("seed")
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(default);
    println!("{}: seed {} (replay with --arg seed={})", tag, seed, seed);
    seed
}

/// `[start, start + len)` (a bad range is a bug in the test).
pub fn range(start: u64, len: u64) -> VirtRange {
    match VirtRange::from_start_len(VirtAddr::new(start as u32), len) {
        Ok(r) => r,
        Err(e) => panic!("bad range {:#x}+{:#x}: {:?}", start, len, e),
    }
}

/// A random memory type, any of the six.
pub fn random_memory(rng: &mut Rng) -> MemoryType {
    match rng.below(6) {
        0 => MemoryType::StronglyOrdered,
        1 => MemoryType::Device,
        2 => MemoryType::NormalNonCacheable,
        3 => MemoryType::NormalWriteThrough,
        4 => MemoryType::NormalWriteBackNoAllocate,
        _ => MemoryType::NormalWriteBack,
    }
}

/// The pattern word at physical address `pa` (low 32 bits and bit 32 mixed in, so a frame
/// above 4 GiB and its low alias differ; below 4 GiB it is `pa ^ MAGIC`).
pub fn pattern(pa: u64) -> u32 {
    (pa as u32) ^ MAGIC ^ ((pa >> 32) as u32).wrapping_mul(0x0101_0101)
}

/// Writes [`pattern`] at three offsets of each of `frames` frames from `pa` (identity-mapped
/// RAM, just allocated).
pub fn fill_pattern(pa: PhysAddr, frames: usize) {
    for f in 0..frames {
        let base = pa.as_u64() + f as u64 * 4096;
        for off in [0u64, 0x800, 0xffc] {
            // SAFETY: low RAM is identity-mapped and these frames were just allocated for us.
            unsafe { core::ptr::write_volatile((base + off) as *mut u32, pattern(base + off)) };
        }
    }
}

/// `frames` frames aligned to `align`, filled with [`pattern`]; `None` if there are none.
pub fn alloc_filled(frames: usize, align: usize) -> Option<PhysAddr> {
    let pa = rt::frames::alloc(frames, align)?;
    fill_pattern(pa, frames);
    Some(pa)
}

/// Samples VAs ([`sample_vas`]) and checks each ([`compare_va`]): the world's intent (or
/// the kernel's, `kernel`) against `translate` and the hardware. Returns how many.
#[allow(clippy::too_many_arguments)]
pub fn compare_sampled<R, P: Copy + Debug, E: Copy + Debug>(
    oracle: &Oracle<R, P, E>,
    tally: &mut Tally,
    world: &World,
    rng: &mut Rng,
    ram_probe: u64,
    translate: impl Fn(VirtAddr) -> Option<Translation>,
    kernel: impl Fn(u32) -> Option<(u64, Attributes)>,
    corrupt: Option<&str>,
    tag: &str,
) -> usize {
    static mut VAS: [u32; MAX_VAS] = [0; MAX_VAS];
    // SAFETY: one CPU, one case; nothing else uses the buffer.
    let vas = unsafe { &mut *core::ptr::addr_of_mut!(VAS) };
    let n = sample_vas(world, rng, vas, ram_probe);
    let mut corrupted_answer = false;
    for &va in vas[..n].iter() {
        let t = translate(VirtAddr::new(va));
        let want = world.lookup(va).or_else(|| kernel(va));
        let c = &mut corrupted_answer;
        compare_va(oracle, tally, va, t, want, corrupt, c, tag);
    }
    n
}

/// The kernel's own mappings as intents: RAM identity (`ram` bytes from its base) and the
/// UART page.
pub fn kernel_intent(va: u32, ram: u64) -> Option<(u64, Attributes)> {
    let v = va as u64;
    if (RAM_BASE..RAM_BASE + ram).contains(&v) {
        return Some((v, Attributes::KERNEL_IMAGE));
    }
    if va as u64 & !0xfff == UART {
        return Some((v, Attributes::DEVICE));
    }
    None
}

//! Shared by the gather boot tests (`gather_no_stale`, `seed_free_pgtables`): the address
//! spaces they run on, the watch the frame allocator's free hook checks against, and the
//! deliberately broken pieces the `bug=` variants switch on.
//!
//! Layout, where RAM lies at or above 1 GiB (`virt`, `vexpress-a9`): a split at 1 GiB
//! (`TTBCR.N = 2`, or `T0SZ = 2` with long descriptors). The kernel table (`TTBR1`, VAs
//! from 1 GiB) identity-maps RAM with global blocks; the process table (`TTBR0`, VAs below
//! 1 GiB, ASID 1) holds the UART page and the test's not-global mappings, so its tables
//! are ASID-tagged (reported non-global by `free_tables`), as a process's are.
//!
//! On `raspi2b` RAM is at 0, below every split, so RAM identity-mapped there could only
//! sit in a `TTBR0` table, where a [`Layout::User`] space refuses global leaves. There the
//! tests run without a split ([`SPLIT`] = 0), as Linux's classic two-level tables do: the
//! kernel table is a [`Layout::Whole`] table (RAM and the UART, global) in `TTBR1`, the
//! table the crate's switch parks `TTBR0` on; the process table is a second
//! [`Layout::Whole`] table in `TTBR0` that carries the same global kernel entries (as
//! Linux's `pgd_alloc` copies them into every process's table) and the test's not-global
//! mappings in the window. The counts follow from that layout: `free_tables` reports a
//! `Whole` space's tables as possibly global, so their invalidates are for all ASIDs and
//! a fallback after table frees is TLBIALL ([`FALLBACK_AFTER_TABLES`]). Short descriptors
//! only there (`format=lpae` runs on `virt`).
//!
//! The descriptor format is the short one unless the command line says `format=lpae`:
//! then both tables are long-descriptor tables (`crate::lpae`), switched to with
//! `arch::lpae::enable`, and the same cases run through the same walker code over them
//! ([`TestFormat`] says what differs: sizes the format has, and the table spans).
//!
//! The free hook runs at the moment the allocator gets a frame back. For every watched
//! mapping whose frame that is, it checks that the old VA no longer translates for the
//! hardware walker (`ATS1CPR`, 32- or 64-bit `PAR` as the format has it) *and* that an
//! access through it faults (the access goes through QEMU's TLB, which keeps serving a
//! stale entry until it is invalidated). Then it reuses the frame the way a new owner
//! would: data frames are filled with [`POISON`], table frames with valid-looking page
//! descriptors of the format in use that point at the [`SECRET`] frame. Any later read
//! through an old VA must fault, never return the old data, poison or the secret.

#![allow(dead_code)]

use armv7_mm::arch::ats::{ats1cpr_64, Par64Result, ParResult};
use armv7_mm::arch::cp15::ats1cpr;
use armv7_mm::arch::{lpae as arch_lpae, mmu};
use armv7_mm::gather::{FlushReport, InFlight, MmuGather, Scope, Tee};
use armv7_mm::lpae::Lpae;
use armv7_mm::short::{Attributes, Execute, Layout, Short};
use armv7_mm::table::{AddressSpace, Format};
use armv7_mm::tlb::Cp15Tlb;
use armv7_mm::{
    Asid, ClearedLeaf, MapSize, Memory, PhysAddr, TlbBackend, TlbCounters, UnmapSink, VirtAddr,
    VirtRange,
};
use rt::fault::{self, FaultClass};
use rt::frames::{KernelMemory, RAM_BASE};
use rt::println;
use spin::Mutex;

/// The process's ASID.
pub const ASID: Asid = Asid(1);
/// `TTBCR.N` / `T0SZ`: the process table translates `[0, 1 GiB)`, the kernel table the
/// rest; 0 (no split, both tables [`Layout::Whole`]) where RAM is below 1 GiB (`raspi2b`).
pub const SPLIT: u8 = if RAM_BASE >> 30 != 0 { 2 } else { 0 };
/// The kernel table's layout under [`SPLIT`].
pub const KERNEL_LAYOUT: Layout = if SPLIT == 0 {
    Layout::Whole
} else {
    Layout::Kernel { n: SPLIT }
};
/// The process table's layout under [`SPLIT`].
pub const USER_LAYOUT: Layout = if SPLIT == 0 {
    Layout::Whole
} else {
    Layout::User { n: SPLIT }
};
/// What a gather of the process space falls back to when it freed tables: `(TLBIASID,
/// TLBIALL)` counts. With a split, one TLBIASID (the crate's switch never walks a
/// process's tables under another ASID, so its walk-cache entries are all under that
/// ASID); without one, the process's tables are `Whole` tables that may hold global
/// entries, which TLBIASID leaves alone: one TLBIALL.
pub const FALLBACK_AFTER_TABLES: (u32, u32) = if SPLIT == 0 { (0, 1) } else { (1, 0) };

/// All-ASID invalidates (TLBIMVAA) a range flush of not-global pages issues when it also
/// unlinks `tables` tables, each already covered by one of the pages' by-VA invalidates:
/// none with a split (the process's tables are ASID-tagged: TLBIMVA covers them); without
/// one, each table's covering invalidate becomes all-ASID (a `Whole` table may hold
/// global entries).
pub const fn all_asid_table_invalidates(tables: u32) -> u32 {
    if SPLIT == 0 {
        tables
    } else {
        0
    }
}
/// What a reused data frame holds.
pub const POISON: u32 = 0xbad0_f00d;
/// What the frame behind the garbage descriptors holds.
pub const SECRET: u32 = 0x5ec2_e7ed;
const UART: u32 = rt::console::UART_BASE as u32;
const MIB: u64 = 1 << 20;

/// An address space of format `F` over the runtime's frames.
pub type Space<F> = AddressSpace<F, KernelMemory>;

/// What the gather cases need to know about a descriptor format.
pub trait TestFormat: Format {
    /// The process address space of this format.
    fn user() -> &'static Mutex<Option<Space<Self>>>;
    /// VA bytes one table of the process space translates (its tables' span).
    const TABLE_SPAN: u64;
    /// VA bytes of the tables sharing one table frame.
    const GROUP: u64;
    /// Blocks of the "one invalidate per block" case: `(offset, size)`, each one leaf.
    const BLOCKS: &'static [(u32, MapSize)];
    /// Leaves a [`map_leaf`] of `size` becomes (sizes the format lacks are split).
    fn leaves(size: MapSize) -> u32;
    /// A valid-looking page descriptor to the frame at `pa`: its words, and how many
    /// there are (1 or 2).
    fn garbage_entry(pa: u32) -> ([u32; 2], usize);
}

static USER_SHORT: Mutex<Option<Space<Short>>> = Mutex::new(None);
static KERNEL_SHORT: Mutex<Option<Space<Short>>> = Mutex::new(None);
static USER_LPAE: Mutex<Option<Space<Lpae>>> = Mutex::new(None);
static KERNEL_LPAE: Mutex<Option<Space<Lpae>>> = Mutex::new(None);

impl TestFormat for Short {
    fn user() -> &'static Mutex<Option<Space<Self>>> {
        &USER_SHORT
    }
    const TABLE_SPAN: u64 = MIB;
    const GROUP: u64 = 4 * MIB;
    const BLOCKS: &'static [(u32, MapSize)] = &[
        (32 << 20, MapSize::Super16M),
        (48 << 20, MapSize::Section1M),
        (49 << 20, MapSize::Section1M),
        (50 << 20, MapSize::Large64K),
        ((50 << 20) + 0x1_0000, MapSize::Large64K),
    ];
    fn leaves(_: MapSize) -> u32 {
        1
    }
    fn garbage_entry(pa: u32) -> ([u32; 2], usize) {
        // Small page, C B, AP = 11 (full access).
        ([pa | 0x3e, 0], 1)
    }
}

impl TestFormat for Lpae {
    fn user() -> &'static Mutex<Option<Space<Self>>> {
        &USER_LPAE
    }
    const TABLE_SPAN: u64 = 2 * MIB;
    const GROUP: u64 = 2 * MIB;
    const BLOCKS: &'static [(u32, MapSize)] = &[
        (32 << 20, MapSize::Block2M),
        (34 << 20, MapSize::Block2M),
        (36 << 20, MapSize::Block2M),
        (48 << 20, MapSize::Block2M),
        (50 << 20, MapSize::Page4K),
    ];
    fn leaves(size: MapSize) -> u32 {
        match size {
            MapSize::Large64K => 16,
            MapSize::Section1M => 256,
            MapSize::Super16M => 8,
            _ => 1,
        }
    }
    fn garbage_entry(pa: u32) -> ([u32; 2], usize) {
        // Level-3 page, AF, AttrIndx 7, AP = 01 (read/write at every level); high word 0.
        ([pa | 0x3 | 7 << 2 | 1 << 6 | 1 << 10, 0], 2)
    }
}

/// Sets up ([`setup`]) and runs the kernel's cases: `lpae` with `format=lpae`, else
/// `short`.
pub fn boot(name: &str, short: fn() -> !, lpae_cases: fn() -> !) -> ! {
    setup(name);
    if lpae() {
        lpae_cases()
    } else {
        short()
    }
}

/// Whether the command line asks for long descriptors (`format=lpae`).
pub fn lpae() -> bool {
    rt::arg("format") == Some("lpae")
}

/// PA of the secret frame.
static SECRET_PA: Mutex<u32> = Mutex::new(0);

/// Boots onto the crate's tables (see the module docs).
pub fn setup(name: &str) {
    let ram = RAM_BASE..RAM_BASE + rt::ram_size();
    let window = u64::from(WINDOW_BASE)..u64::from(WINDOW_BASE) + u64::from(WINDOW_LEN);
    assert!(
        ram.end <= window.start || window.end <= ram.start,
        "the test window overlaps RAM"
    );
    rt::mmu::enable_identity(rt::ram_size());
    if lpae() {
        setup_lpae();
    } else {
        setup_short();
    }
    let secret = rt::frames::alloc(1, 4096).expect("secret frame");
    fill(secret.as_u64() as u32, 4096, SECRET);
    *SECRET_PA.lock() = secret.as_u64() as u32;
    rt::frames::set_free_hook(Some(free_hook));
    println!(
        "{name}: on the crate's {} tables ({}, ASID {}), bug = {}",
        if lpae() {
            "long-descriptor"
        } else {
            "short-descriptor"
        },
        if SPLIT == 0 {
            "no split: RAM at 0, kernel entries in the process table"
        } else {
            "split at 1 GiB"
        },
        ASID.0,
        rt::arg("bug").unwrap_or("none")
    );
}

/// The kernel's entries: RAM identity-mapped with global blocks, and (without a split,
/// where this table also translates the low VAs) the UART page, global.
fn map_kernel_entries<F: Format>(space: &mut Space<F>) {
    let ram = range(RAM_BASE as u32, rt::ram_size());
    space
        .map(
            ram,
            PhysAddr::new(RAM_BASE),
            Attributes::KERNEL_IMAGE,
            MapSize::Block1G,
        )
        .unwrap_or_else(|e| panic!("kernel map: {e:?}"));
    if SPLIT == 0 {
        space
            .map(
                range(UART, 4096),
                PhysAddr::new(UART as u64),
                Attributes::DEVICE,
                MapSize::Page4K,
            )
            .unwrap_or_else(|e| panic!("kernel uart map: {e:?}"));
    }
}

/// The kernel table (RAM identity, global) and the process table (UART page; without a
/// split also the kernel's entries, see the module docs).
fn spaces<F: Format>(features: F::Features) -> (Space<F>, Space<F>) {
    let mut kernel = Space::<F>::new(KernelMemory, KERNEL_LAYOUT, features)
        .unwrap_or_else(|e| panic!("kernel space: {e:?}"));
    map_kernel_entries(&mut kernel);
    let mut user = Space::<F>::new(KernelMemory, USER_LAYOUT, features)
        .unwrap_or_else(|e| panic!("user space: {e:?}"));
    if SPLIT == 0 {
        // The same global entries as the kernel table: what runs through TTBR0 while
        // parked on the kernel table must be mapped identically by the process table.
        map_kernel_entries(&mut user);
    } else {
        user.map(
            range(UART, 4096),
            PhysAddr::new(UART as u64),
            // Not global: a process space takes only ASID-tagged leaves.
            Attributes {
                global: false,
                ..Attributes::DEVICE
            },
            MapSize::Page4K,
        )
        .unwrap_or_else(|e| panic!("uart map: {e:?}"));
    }
    (kernel, user)
}

fn setup_short() {
    let (kernel, user) = spaces::<Short>(mmu::detect_features());
    // SAFETY: RAM (code, data, stacks, tables) stays identity-mapped with the same memory
    // type through the kernel table, the UART through the process table. Without a split
    // both tables map RAM and the UART identically with global entries (the kernel table
    // in TTBR1 is what the switch parks TTBR0 on), and the kernel table holds no
    // non-global entry.
    unsafe {
        mmu::enable_tex_remap();
        mmu::set_split(SPLIT, kernel.root()).unwrap_or_else(|e| panic!("split: {e:?}"));
        mmu::activate(user.root(), ASID).unwrap_or_else(|e| panic!("activate: {e:?}"));
    }
    *KERNEL_SHORT.lock() = Some(kernel);
    *USER_SHORT.lock() = Some(user);
}

fn setup_lpae() {
    if SPLIT == 0 {
        panic!("format=lpae runs with the 1 GiB split: RAM at or above 1 GiB");
    }
    let features = arch_lpae::detect_features().expect("a CPU with LPAE");
    let (kernel, user) = spaces::<Lpae>(features);
    // SAFETY: as for the short format: RAM identity-mapped by the kernel table (same
    // memory type: MAIR slot 7 is what the boot map's TEX/C/B say), the UART by the
    // process table; the boot map does not use TEX remap.
    unsafe {
        arch_lpae::enable(SPLIT, user.root(), ASID, kernel.root())
            .unwrap_or_else(|e| panic!("enable: {e:?}"));
    }
    *KERNEL_LPAE.lock() = Some(kernel);
    *USER_LPAE.lock() = Some(user);
}

/// What the hardware walker translates `va` to now (`ATS1CPR`, in the `PAR` format of
/// the tables in use), or `None` for a fault.
pub fn translates(va: u32) -> Option<u64> {
    if lpae() {
        match Par64Result::decode(ats1cpr_64(va)) {
            Par64Result::Ok { pa, .. } => Some(pa),
            Par64Result::Fault { .. } => None,
        }
    } else {
        match ParResult::decode(ats1cpr(va)) {
            ParResult::Ok { pa, .. } => Some(u64::from(pa)),
            ParResult::Fault { .. } => None,
        }
    }
}

/// Table frames (`.0`) and table spans (`.1`) of the process space that pages at `vas`
/// live in, for format `F`: what `free_tables` will free and unlink once they are gone.
pub fn tables_for<F: TestFormat>(vas: &[u32]) -> (u32, u32) {
    let distinct = |unit: u64| {
        let mut seen = [u64::MAX; 256];
        let mut n = 0;
        for &va in vas {
            let k = u64::from(va) / unit;
            if !seen[..n].contains(&k) && n < seen.len() {
                seen[n] = k;
                n += 1;
            }
        }
        n as u32
    };
    (distinct(F::GROUP), distinct(F::TABLE_SPAN))
}

pub fn range(start: u32, len: u64) -> VirtRange {
    VirtRange::from_start_len(VirtAddr::new(start), len)
        .unwrap_or_else(|e| panic!("range {start:#x}+{len:#x}: {e:?}"))
}

fn fill(addr: u32, bytes: u32, word: u32) {
    for off in (0..bytes).step_by(4) {
        // SAFETY: `addr` is an identity-mapped RAM frame range the caller owns (just
        // allocated, or handed back to the allocator and being reused by the hook).
        unsafe { core::ptr::write_volatile((addr + off) as *mut u32, word) };
    }
}

/// Fills `[addr, addr + bytes)` with copies of the descriptor `entry` (one or two words).
fn fill_entries(addr: u32, bytes: u32, entry: &[u32]) {
    let step = 4 * entry.len() as u32;
    for off in (0..bytes).step_by(step as usize) {
        for (k, &w) in entry.iter().enumerate() {
            // SAFETY: as in `fill`: a frame handed back to the allocator, identity-mapped.
            unsafe { core::ptr::write_volatile((addr + off + 4 * k as u32) as *mut u32, w) };
        }
    }
}

/// The first word of a data frame: tells which frame a read came from.
pub fn pattern(pa: u32) -> u32 {
    0xda7a_0000 | (pa >> 12 & 0xffff)
}

// ---- The watch ----------------------------------------------------------------------

const MAX_LEAVES: usize = 1200;
const MAX_TABLES: usize = 128;

#[derive(Clone, Copy)]
struct Watched {
    va: u32,
    pa: u32,
    bytes: u32,
    freed: bool,
}

struct Watch {
    leaves: [Watched; MAX_LEAVES],
    nleaves: usize,
    tables: [u32; MAX_TABLES],
    ntables: usize,
    /// Failures seen by the hook.
    stale: u32,
    /// Pages checked by the hook.
    checked: u32,
    /// Table frames garbage-filled by the hook.
    garbage_tables: u32,
}

static WATCH: Mutex<Watch> = Mutex::new(Watch {
    leaves: [Watched {
        va: 0,
        pa: 0,
        bytes: 0,
        freed: false,
    }; MAX_LEAVES],
    nleaves: 0,
    tables: [0; MAX_TABLES],
    ntables: 0,
    stale: 0,
    checked: 0,
    garbage_tables: 0,
});

/// What the hook saw since the last [`reset_watch`].
#[derive(Clone, Copy, Debug, Default)]
pub struct HookStats {
    pub stale: u32,
    pub checked: u32,
    pub garbage_tables: u32,
    pub freed_leaves: usize,
    pub leaves: usize,
}

pub fn reset_watch() {
    let mut w = WATCH.lock();
    w.nleaves = 0;
    w.ntables = 0;
    w.stale = 0;
    w.checked = 0;
    w.garbage_tables = 0;
}

pub fn hook_stats() -> HookStats {
    let w = WATCH.lock();
    HookStats {
        stale: w.stale,
        checked: w.checked,
        garbage_tables: w.garbage_tables,
        freed_leaves: w.leaves[..w.nleaves].iter().filter(|l| l.freed).count(),
        leaves: w.nleaves,
    }
}

fn watch_leaf(va: u32, pa: u32, bytes: u32) {
    let mut w = WATCH.lock();
    assert!(w.nleaves < MAX_LEAVES, "watch full");
    let n = w.nleaves;
    w.leaves[n] = Watched {
        va,
        pa,
        bytes,
        freed: false,
    };
    w.nleaves += 1;
}

/// Records a table frame the walkers reported freed (its reuse fills it with garbage).
pub fn watch_table(pa: u32) {
    let mut w = WATCH.lock();
    if w.ntables < MAX_TABLES {
        let n = w.ntables;
        w.tables[n] = pa;
        w.ntables += 1;
    }
}

/// Checks that `va` neither translates nor reads; returns false (and says why) otherwise.
fn gone(va: u32, what: &str) -> bool {
    let par = translates(va);
    let read = fault::read32(va as usize);
    let secret = *SECRET_PA.lock();
    match read {
        Err(f) if f.class() == FaultClass::Translation => {
            if let Some(pa) = par {
                println!("    STALE ({what}): {va:#010x}: access faults but ATS1CPR gives {pa:#x}");
                return false;
            }
            true
        }
        Err(f) => {
            println!(
                "    STALE ({what}): {va:#010x}: {:?} fault, not a translation fault",
                f.class()
            );
            false
        }
        Ok(v) => {
            let kind = if v == POISON {
                "poison: the frame was reused"
            } else if v == SECRET {
                "the secret: a walk went through a freed, reused table"
            } else if v >> 16 == 0xda7a {
                "the old data: the TLB still holds the translation"
            } else {
                "unexpected data"
            };
            println!(
                "    STALE ({what}): {va:#010x} reads {v:#010x}, {kind} (secret frame {secret:#x})"
            );
            false
        }
    }
}

/// Pages of a leaf the hook probes: all of a small mapping, a sample of a big one.
fn probe_offsets(bytes: u32) -> impl Iterator<Item = u32> {
    let pages = bytes / 4096;
    let step = if pages <= 16 { 1 } else { pages / 8 };
    let last = (pages > 1 && !(pages - 1).is_multiple_of(step)).then_some(pages - 1);
    (0..pages)
        .step_by(step as usize)
        .chain(last)
        .map(|p| p * 4096)
}

/// The allocator's free hook.
fn free_hook(pa: PhysAddr, count: usize) {
    let (start, end) = (pa.as_u64() as u32, pa.as_u64() as u32 + count as u32 * 4096);
    let (nleaves, table) = {
        let w = WATCH.lock();
        (w.nleaves, w.tables[..w.ntables].contains(&start))
    };
    // A call may hand back one leaf or a whole run of them (`release_mapped_run`).
    let (mut stale, mut checked, mut n) = (0, 0, 0);
    for i in 0..nleaves {
        let l = WATCH.lock().leaves[i];
        if l.freed || l.pa >= end || start >= l.pa + l.bytes {
            continue;
        }
        n += 1;
        for off in probe_offsets(l.bytes) {
            checked += 1;
            if !gone(l.va + off, "at free") {
                stale += 1;
            }
        }
        WATCH.lock().leaves[i].freed = true;
    }
    // Reuse: someone else now owns the frame.
    if table {
        let secret = *SECRET_PA.lock();
        // Page descriptors of the format in use, full access, to the secret frame.
        let (entry, words) = if lpae() {
            Lpae::garbage_entry(secret)
        } else {
            Short::garbage_entry(secret)
        };
        fill_entries(start, end - start, &entry[..words]);
        WATCH.lock().garbage_tables += 1;
    } else if n > 0 {
        fill(start, end - start, POISON);
    }
    let mut w = WATCH.lock();
    w.stale += stale;
    w.checked += checked;
}

/// After the gather: every watched VA must fault (never old data, poison or the secret).
pub fn check_all_gone() -> u32 {
    let copy: ([Watched; MAX_LEAVES], usize) = {
        let w = WATCH.lock();
        (w.leaves, w.nleaves)
    };
    let mut stale = 0;
    for l in &copy.0[..copy.1] {
        for off in probe_offsets(l.bytes) {
            if !gone(l.va + off, "after finish") {
                stale += 1;
            }
        }
    }
    stale
}

// ---- Mapping and touching -----------------------------------------------------------

/// Maps one leaf of `size` at `va` to fresh frames holding their [`pattern`], watched (a
/// size the format does not have becomes several smaller leaves, see
/// [`TestFormat::leaves`]).
pub fn map_leaf<F: Format>(
    space: &mut Space<F>,
    va: u32,
    size: MapSize,
    exec: bool,
) -> Result<(), ()> {
    let bytes = size.bytes() as u32;
    let frames = (bytes / 4096) as usize;
    let Some(pa) = rt::frames::alloc(frames, bytes as usize) else {
        println!("    out of frames mapping {va:#x}");
        return Err(());
    };
    let p = pa.as_u64() as u32;
    for f in 0..frames as u32 {
        // SAFETY: our fresh frames, identity-mapped.
        unsafe { core::ptr::write_volatile((p + f * 4096) as *mut u32, pattern(p + f * 4096)) };
    }
    let attrs = if exec {
        Attributes::USER_DATA.with_permissions(Attributes::USER_DATA.access, Execute::Anywhere)
    } else {
        Attributes::USER_DATA
    };
    if let Err(e) = space.map(range(va, bytes as u64), pa, attrs, size) {
        println!("    map {va:#x} ({size:?}): {e:?}");
        rt::frames::free(pa, frames);
        return Err(());
    }
    watch_leaf(va, p, bytes);
    Ok(())
}

/// Reads every watched page sample through its VA (loads the TLB) and checks the data.
pub fn touch_all() -> Result<(), ()> {
    let copy: ([Watched; MAX_LEAVES], usize) = {
        let w = WATCH.lock();
        (w.leaves, w.nleaves)
    };
    for l in &copy.0[..copy.1] {
        for off in probe_offsets(l.bytes) {
            let got = fault::read32((l.va + off) as usize);
            if got != Ok(pattern(l.pa + off)) {
                println!("    touch {:#x}: {:?}", l.va + off, got);
                return Err(());
            }
        }
    }
    Ok(())
}

// ---- The bugs the variants switch on ------------------------------------------------

/// Which bug the `bug=` argument switches on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Bug {
    None,
    /// The backend drops every TLB invalidate (barriers still issued).
    SkipFlush,
    /// No gather: frames are freed the moment the walker reports them.
    FreeEarly,
}

pub fn bug() -> Bug {
    match rt::arg("bug") {
        Some("skip_flush") => Bug::SkipFlush,
        Some("free_early") => Bug::FreeEarly,
        _ => Bug::None,
    }
}

/// The CPU's TLB backend with its errata (`rt::cpu_errata`), optionally broken ([`Bug::SkipFlush`]).
pub struct TestTlb {
    pub inner: Cp15Tlb,
    pub skip: bool,
}

impl TestTlb {
    pub fn new() -> Self {
        Self {
            inner: rt::detect_tlb(),
            skip: bug() == Bug::SkipFlush,
        }
    }
}

impl TlbBackend for TestTlb {
    fn prepare(&mut self) {
        self.inner.prepare()
    }
    fn invalidate_va(&mut self, va: VirtAddr, asid: Asid) {
        if !self.skip {
            self.inner.invalidate_va(va, asid)
        }
    }
    fn invalidate_va_all_asids(&mut self, va: VirtAddr) {
        if !self.skip {
            self.inner.invalidate_va_all_asids(va)
        }
    }
    fn invalidate_asid(&mut self, asid: Asid) {
        if !self.skip {
            self.inner.invalidate_asid(asid)
        }
    }
    fn invalidate_all(&mut self) {
        if !self.skip {
            self.inner.invalidate_all()
        }
    }
    fn invalidate_branch_predictor(&mut self) {
        self.inner.invalidate_branch_predictor()
    }
    fn complete(&mut self) {
        self.inner.complete()
    }
    fn counters(&self) -> TlbCounters {
        self.inner.counters()
    }
}

/// [`Bug::FreeEarly`]: frees what the walker reports at once, as a kernel without a gather
/// would.
pub struct FreeAtOnce;

impl UnmapSink for FreeAtOnce {
    // Not a protect sink: nothing to invalidate or flush early here.
    fn leaf_changed(&mut self, _: armv7_mm::ChangedLeaf) {}
    fn flush_now(&mut self) {}
    fn leaf_cleared(&mut self, leaf: ClearedLeaf) {
        KernelMemory.release_mapped(leaf.va, leaf.pa, leaf.size.bytes() as usize);
    }
    fn table_unlinked(&mut self, _: VirtAddr, _: u64, _: bool) {}
    fn table_memory_freed(&mut self, pa: PhysAddr, frames: usize) {
        KernelMemory.free_frames(pa, frames);
    }
}

/// Records the table frames the walkers free (so the hook can reuse them as garbage
/// tables).
pub struct TableRecorder;

impl UnmapSink for TableRecorder {
    // Not a protect sink: nothing to invalidate or flush early here.
    fn leaf_changed(&mut self, _: armv7_mm::ChangedLeaf) {}
    fn flush_now(&mut self) {}
    fn leaf_cleared(&mut self, _: ClearedLeaf) {}
    fn table_unlinked(&mut self, _: VirtAddr, _: u64, _: bool) {}
    fn table_memory_freed(&mut self, pa: PhysAddr, _: usize) {
        watch_table(pa.as_u64() as u32);
    }
}

// ---- Running a case's work through a gather -------------------------------------------

/// Start of the test window in the process half (below 1 GiB, clear of RAM and the UART).
pub const WINDOW_BASE: u32 = rt::board::FREE_VA;
/// Length of the test window.
pub const WINDOW_LEN: u32 = 256 << 20;

/// What a phase does over the window.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Work {
    Unmap,
    FreeTables,
    Both,
}

/// How a phase ends its gather.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum End {
    Finish,
    /// Dropped without `finish` (the report is taken just before).
    Drop,
}

/// The gathers' in-flight registry.
pub static IN_FLIGHT: InFlight = InFlight::new();

/// What a phase through a gather saw.
pub struct Pass {
    /// The gather's report.
    pub report: FlushReport,
    /// What the backend counted during the phase.
    pub counters: TlbCounters,
    /// The backend dropped its invalidates ([`Bug::SkipFlush`]).
    pub skip: bool,
}

/// Locks the process space of format `F` (after clearing the watch) and runs `f` on it.
pub fn with_space<F: TestFormat>(
    f: impl FnOnce(&mut Space<F>) -> rt::CaseResult,
) -> rt::CaseResult {
    reset_watch();
    let mut guard = F::user().lock();
    let Some(space) = guard.as_mut() else {
        return Err(());
    };
    f(space)
}

/// Runs `work` over the window: through an [`MmuGather`] on [`TestTlb`] (the recorder,
/// then the gather, then `extra` see each report), ended as `end` says; or, with
/// `bug=free_early`, through [`FreeAtOnce`] (the recorder, then it; `extra` sees nothing),
/// and then there is no gather to speak of: `Some(None)`.
pub fn phase<F: TestFormat>(
    space: &mut Space<F>,
    work: Work,
    end: End,
    extra: &mut dyn UnmapSink,
) -> Option<Option<Pass>> {
    let window = range(WINDOW_BASE, WINDOW_LEN as u64);
    let run = |space: &mut Space<F>, sink: &mut dyn UnmapSink| -> Option<()> {
        if work != Work::FreeTables {
            space.unmap(window, sink).ok()?;
        }
        if work != Work::Unmap {
            space.free_tables(window, window, sink).ok()?;
        }
        Some(())
    };
    let mut recorder = TableRecorder;
    if bug() == Bug::FreeEarly {
        let mut eager = FreeAtOnce;
        run(space, &mut Tee::new(&mut recorder, &mut eager))?;
        return Some(None);
    }
    let mut tlb = TestTlb::new();
    let before = tlb.counters();
    let mut gather = MmuGather::new(Scope::Asid(ASID), &mut tlb, KernelMemory, &IN_FLIGHT);
    {
        let mut inner = Tee::new(&mut gather, extra);
        let mut sink = Tee::new(&mut recorder, &mut inner);
        run(space, &mut sink)?;
    }
    let report = match end {
        End::Finish => gather.finish(),
        End::Drop => {
            let r = gather.report();
            drop(gather);
            r
        }
    };
    Some(Some(Pass {
        report,
        counters: tlb.counters().since(&before),
        skip: tlb.skip,
    }))
}

/// A sink that ignores every report (for [`phase`]'s `extra` when nothing else listens).
pub struct Ignore;

impl UnmapSink for Ignore {
    // Not a protect sink: nothing to invalidate or flush early here.
    fn leaf_changed(&mut self, _: armv7_mm::ChangedLeaf) {}
    fn flush_now(&mut self) {}
    fn leaf_cleared(&mut self, _: ClearedLeaf) {}
    fn table_unlinked(&mut self, _: VirtAddr, _: u64, _: bool) {}
    fn table_memory_freed(&mut self, _: PhysAddr, _: usize) {}
}

//! Shared by the SMP boot tests (`smp_shootdown`, `asid_switch`): the kernel half and the
//! parking space every CPU runs when it runs no test space, the ASID allocator, readers
//! that watch a set of user VAs from other CPUs, and the frame pool whose hand-back
//! poisons and reuses frames.
//!
//! Layout, where RAM lies at or above 1 GiB (`virt`, `vexpress-a9`): `TTBCR.N = 2`. The
//! kernel table (`TTBR1`, VAs from 1 GiB) identity-maps RAM with global supersections.
//! Every user space (`TTBR0`, below 1 GiB) maps the UART page (not global, device) so
//! that any CPU can print whatever it runs; the *park* space maps nothing else. ASIDs come
//! from one [`AsidAllocator`] through `LockedAddressSpace::activate` (the architected
//! switch).
//!
//! On `raspi2b` RAM is at 0, below every split, and a [`Layout::User`] table refuses the
//! global entries the kernel's RAM needs. There [`SPLIT`] is 0, as in Linux's classic
//! two-level tables: the kernel table and every user space are [`Layout::Whole`] tables,
//! each user space carrying the kernel's global entries (RAM and the UART, as Linux's
//! `pgd_alloc` copies them) below its own not-global mappings, and the kernel table in
//! `TTBR1` is what the crate's switch parks `TTBR0` on while the ASID changes. A `Whole`
//! space's tables count as possibly global, so the gathers invalidate freed tables for
//! all ASIDs and fall back to TLBIALL after table frees. Short descriptors only there.
//!
//! # Readers
//!
//! A reader CPU switches to the test space and reads every watched VA (`ldrt`, as user
//! mode) in passes until told to stop. Each watched VA holds [`content`]`(va)` in every
//! word of its frame while mapped. A read must give that value or a translation fault.
//! Anything else is *stale*: [`POISON`] (the frame was handed back and poisoned: the
//! TLB still reached it), another VA's content (the frame was reused for another
//! mapping), [`SECRET`] (a walk went through a freed table reused as garbage). A slot
//! can also be marked [`FLUSHED`] by the zapper once its gather has finished: then even
//! the right content is stale (a translation survived the flush that promised it gone).
//!
//! # Hand-back
//!
//! [`PoolMemory`] is the `Memory` the gathers hand mapped frames back to: at that moment it
//! fills the frame with [`POISON`], (when armed, see [`arm_handshake`]) waits until every
//! reader has completed a full pass (so a reader whose TLB still reaches the frame *will*
//! read the poison, whatever the scheduling), and puts the frame at the back of a FIFO
//! pool from which the next mappings take theirs: a frame comes back at another VA with
//! new content. Table and
//! batch frames go to the runtime allocator, whose free hook fills a freed table frame
//! with small-page descriptors pointing at the [`SECRET`] frame.

#![allow(dead_code)]

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::ptr::NonNull;
use core::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicUsize, Ordering};

use armv7_mm::arch::barrier::dsb_ish;
use armv7_mm::arch::lpae as arch_lpae;
use armv7_mm::arch::mmu;
use armv7_mm::asid::AsidAllocator;
use armv7_mm::locked::LockedAddressSpace;
use armv7_mm::lpae::Lpae;
use armv7_mm::short::{AddressSpace, Attributes, Layout, Short};
use armv7_mm::table::{self, Format};
use armv7_mm::tlb::{Cp15Tlb, Shareability};
use armv7_mm::Asid;
use armv7_mm::{MapSize, Memory, PhysAddr, VirtAddr, VirtRange};
use rt::fault::{self, FaultClass};
use rt::frames::{KernelMemory, RAM_BASE};
use rt::println;
use tock_registers::interfaces::Writeable;

/// `TTBCR.N`: user tables translate `[0, 1 GiB)`; 0 (no split, every table
/// [`Layout::Whole`]) where RAM is below 1 GiB (`raspi2b`).
pub const SPLIT: u8 = if RAM_BASE >> 30 != 0 { 2 } else { 0 };
/// The kernel table's layout under [`SPLIT`].
const KERNEL_LAYOUT: Layout = if SPLIT == 0 {
    Layout::Whole
} else {
    Layout::Kernel { n: SPLIT }
};
/// The user spaces' layout under [`SPLIT`].
const USER_LAYOUT: Layout = if SPLIT == 0 {
    Layout::Whole
} else {
    Layout::User { n: SPLIT }
};
/// What a handed-back data frame holds.
pub const POISON: u32 = 0xdead_dead;
/// What the frame behind a garbage-filled freed table holds.
pub const SECRET: u32 = 0x5ec2_e7ed;
const UART: u32 = rt::console::UART_BASE as u32;
/// CPUs the runtime has.
pub const CPUS: usize = 4;

/// The ASID allocator of all CPUs.
pub static ALLOC: AsidAllocator<CPUS> = AsidAllocator::new();

/// Long-descriptor spaces of the tests ([`setup_lpae`]).
pub type LpaeSpace = LockedAddressSpace<KernelMemory, Lpae>;

/// Spaces of the tests: the kernel memory model, short descriptors.
pub type Space = LockedAddressSpace<KernelMemory>;

// ---- A static slot for values built at run time --------------------------------------

/// A `static` that is filled at run time, shared by reference, and emptied again when
/// every user is done (the tests' protocol guarantees it; see `take`).
pub struct Slot<T> {
    full: AtomicBool,
    value: UnsafeCell<MaybeUninit<T>>,
}

// SAFETY: the value is written once by `put` before `full` is published (SeqCst), read
// through `&T` afterwards, and moved out by `take` only when no reference is left.
unsafe impl<T: Send + Sync> Sync for Slot<T> {}

impl<T> Slot<T> {
    pub const fn new() -> Self {
        Self {
            full: AtomicBool::new(false),
            value: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    /// Fills the slot. Panics if it is full.
    pub fn put(&self, v: T) {
        assert!(!self.full.load(Ordering::SeqCst), "slot already full");
        // SAFETY: the slot is empty, so nobody holds a reference into it.
        unsafe { (*self.value.get()).write(v) };
        self.full.store(true, Ordering::SeqCst);
    }

    /// The value. Panics if the slot is empty.
    pub fn get(&self) -> &T {
        assert!(self.full.load(Ordering::SeqCst), "slot empty");
        // SAFETY: full, so initialized; it stays in place until `take`, which the caller
        // of `take` only calls once every reference is gone.
        unsafe { (*self.value.get()).assume_init_ref() }
    }

    /// Empties the slot and returns the value.
    ///
    /// # Safety
    /// No reference obtained from [`Slot::get`] may be used afterwards (every CPU that
    /// used it has finished).
    pub unsafe fn take(&self) -> T {
        assert!(self.full.swap(false, Ordering::SeqCst), "slot empty");
        // SAFETY: it was full; the caller guarantees no reference is left.
        unsafe { (*self.value.get()).assume_init_read() }
    }
}

/// The kernel table (never torn down).
static KERNEL: spin::Mutex<Option<AddressSpace<KernelMemory>>> = spin::Mutex::new(None);
/// The parking space: the UART and nothing else.
pub static PARK: Slot<Space> = Slot::new();
/// The long-descriptor kernel table and parking space ([`setup_lpae`]).
static KERNEL_LPAE: spin::Mutex<Option<table::AddressSpace<Lpae, KernelMemory>>> =
    spin::Mutex::new(None);
pub static PARK_LPAE: Slot<LpaeSpace> = Slot::new();
/// [`setup_lpae`] ran: the CPUs walk long descriptors.
static LPAE: AtomicBool = AtomicBool::new(false);
/// PA of the secret frame.
static SECRET_PA: AtomicU32 = AtomicU32::new(0);

/// Which bug the `bug=` argument switches on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Bug {
    None,
    /// Every gather uses the local (non-broadcast) TLB operations.
    Local,
    /// Frames are handed back the moment the walker clears them, before any flush.
    FreeEarly,
    /// Overlapping gathers are not counted together (no nested fallback).
    NoNested,
    /// Table memory is freed without waiting for lockless walkers.
    NoTableSync,
}

pub fn bug() -> Bug {
    match rt::arg("bug") {
        Some("local") => Bug::Local,
        Some("free_early") => Bug::FreeEarly,
        Some("no_nested") => Bug::NoNested,
        Some("no_table_sync") => Bug::NoTableSync,
        _ => Bug::None,
    }
}

/// The TLB backend gathers use: the one this CPU calls for, with the system's errata
/// (inner shareable on every SMP core QEMU models; [`rt::detect_tlb`] waives the ACTLR check, QEMU's ACTLR being
/// RAZ/WI), or the local form with [`Bug::Local`].
pub fn tlb() -> Cp15Tlb {
    let t = rt::detect_tlb();
    if bug() == Bug::Local {
        t.with_shareability(Shareability::Local)
    } else {
        t
    }
}

pub fn range(start: u32, len: u64) -> VirtRange {
    VirtRange::from_start_len(VirtAddr::new(start), len)
        .unwrap_or_else(|e| panic!("range {start:#x}+{len:#x}: {e:?}"))
}

fn fill(addr: u32, bytes: u32, word: u32) {
    let p = addr as usize as *mut u32;
    for i in 0..(bytes / 4) as usize {
        // SAFETY: `addr` is an identity-mapped RAM frame range the caller owns.
        unsafe { p.add(i).write_volatile(word) };
    }
}

/// A fresh user space of format `F` with the UART mapped (without a split: the kernel's
/// entries, see the module docs).
fn user_table<F: Format>(features: F::Features) -> table::AddressSpace<F, KernelMemory> {
    let mut user = table::AddressSpace::<F, _>::new(KernelMemory, USER_LAYOUT, features)
        .unwrap_or_else(|e| panic!("user space: {e:?}"));
    if SPLIT == 0 {
        // What runs while TTBR0 is parked on the kernel table must be mapped identically
        // here: the kernel's global entries.
        map_kernel_entries(&mut user, MapSize::Super16M);
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
    user
}

/// The kernel's entries: RAM identity-mapped with global leaves up to `max`, and, without
/// a split (where the table also translates the low VAs), the UART page, global.
fn map_kernel_entries<F: Format>(space: &mut table::AddressSpace<F, KernelMemory>, max: MapSize) {
    space
        .map(
            range(RAM_BASE as u32, rt::ram_size()),
            PhysAddr::new(RAM_BASE),
            Attributes::KERNEL_IMAGE,
            max,
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

/// The kernel table of format `F`: RAM identity-mapped from the split up (everything the
/// kernel uses, without a split).
fn kernel_table<F: Format>(
    features: F::Features,
    max: MapSize,
) -> table::AddressSpace<F, KernelMemory> {
    let mut kernel = table::AddressSpace::<F, _>::new(KernelMemory, KERNEL_LAYOUT, features)
        .unwrap_or_else(|e| panic!("kernel space: {e:?}"));
    map_kernel_entries(&mut kernel, max);
    kernel
}

/// A fresh short-descriptor user space with the UART mapped.
pub fn new_user_space() -> Space {
    LockedAddressSpace::new(user_table::<Short>(mmu::detect_features()))
}

/// A fresh long-descriptor user space with the UART mapped (after [`setup_lpae`]).
pub fn new_lpae_user_space() -> LpaeSpace {
    let features = arch_lpae::detect_features().expect("a CPU with LPAE");
    LockedAddressSpace::new(user_table::<Lpae>(features))
}

/// The rest of the boot, both formats: the secret frame, the free hook, the banner.
fn setup_common(name: &str, format: &str) {
    let secret = rt::frames::alloc(1, 4096).expect("secret frame");
    fill(secret.as_u64() as u32, 4096, SECRET);
    SECRET_PA.store(secret.as_u64() as u32, Ordering::SeqCst);
    rt::frames::set_free_hook(Some(table_free_hook));
    println!(
        "{name}: {} CPUs on the crate's {format} tables (TTBCR.N = {SPLIT}), TLB scope {:?}, bug = {}",
        rt::smp::cpus(),
        tlb().shareability(),
        rt::arg("bug").unwrap_or("none")
    );
}

/// Maps `[va, va + bytes)` to device memory at `pa` in the short-descriptor kernel table
/// (global, kernel only; after [`setup`], before the CPUs that use it start), e.g. the
/// interrupt controller.
pub fn map_kernel_device(va: u32, pa: u64, bytes: u64) {
    // Without a split the user spaces translate every VA themselves.
    if SPLIT == 0 {
        panic!("map_kernel_device needs the 1 GiB split");
    }
    let mut kernel = KERNEL.lock();
    let kernel = kernel.as_mut().expect("map_kernel_device before setup");
    kernel
        .map(
            range(va, bytes),
            PhysAddr::new(pa),
            Attributes::DEVICE,
            MapSize::Section1M,
        )
        .unwrap_or_else(|e| panic!("device map {va:#x}: {e:?}"));
    // A new entry (nothing was cached for it): visible to this CPU's walks.
    dsb_ish();
    armv7_mm::arch::barrier::isb();
}

/// Boots onto the crate's short-descriptor tables, every CPU parked (see the module
/// docs).
pub fn setup(name: &str) {
    rt::mmu::enable_identity(rt::ram_size());
    let kernel = kernel_table::<Short>(mmu::detect_features(), MapSize::Super16M);
    let park = new_user_space();
    // SAFETY: RAM stays identity-mapped through the kernel table with the same memory
    // type, the UART through every user table. Without a split every table maps RAM and
    // the UART identically with global entries, and the kernel table (the parking table
    // in TTBR1) holds no non-global entry.
    unsafe {
        mmu::enable_tex_remap();
        mmu::set_split(SPLIT, kernel.root()).unwrap_or_else(|e| panic!("split: {e:?}"));
    }
    PARK.put(park);
    *KERNEL.lock() = Some(kernel);
    let _ = switch_to(PARK.get());
    setup_common(name, "short-descriptor");
}

/// Boots onto the crate's long-descriptor (LPAE) tables, with the long-descriptor parking
/// space (switch with [`switch_to_lpae`], park with [`park`]).
pub fn setup_lpae(name: &str) {
    if SPLIT == 0 {
        panic!("the LPAE setup runs with the 1 GiB split: RAM at or above 1 GiB");
    }
    rt::mmu::enable_identity(rt::ram_size());
    let features = arch_lpae::detect_features().expect("a CPU with LPAE");
    let kernel = kernel_table::<Lpae>(features, MapSize::Block1G);
    let park = new_lpae_user_space();
    // SAFETY: RAM identity-mapped by the kernel table (MAIR slot 7 is what the boot map's
    // TEX/C/B say), the UART by every user table.
    unsafe {
        arch_lpae::enable(SPLIT, park.root(), Asid(0), kernel.root())
            .unwrap_or_else(|e| panic!("enable: {e:?}"));
    }
    LPAE.store(true, Ordering::SeqCst);
    PARK_LPAE.put(park);
    *KERNEL_LPAE.lock() = Some(kernel);
    let _ = switch_to_lpae(PARK_LPAE.get());
    setup_common(name, "long-descriptor");
}

/// Switches this CPU to the long-descriptor `space` (ASID from [`ALLOC`], one 64-bit
/// `TTBR0` write); returns what the allocator decided (already acted on).
pub fn switch_to_lpae(space: &LpaeSpace) -> armv7_mm::asid::Switch {
    // SAFETY: as `switch_to`, for the long-descriptor tables.
    unsafe { space.activate(&ALLOC, rt::cpu_id()) }.unwrap_or_else(|e| panic!("switch: {e:?}"))
}

/// Switches this CPU to `space` (ASID from [`ALLOC`], architected sequence); returns
/// what the allocator decided (already acted on).
pub fn switch_to(space: &Space) -> armv7_mm::asid::Switch {
    // SAFETY: every user space maps the UART identically and nothing else the kernel
    // uses; RAM is reached through TTBR1 (without a split: every user space maps RAM and
    // the UART with the kernel table's global entries, and TTBR1 is that table).
    unsafe { space.activate(&ALLOC, rt::cpu_id()) }.unwrap_or_else(|e| panic!("switch: {e:?}"))
}

/// Switches this CPU to the parking space (of the format [`setup`] / [`setup_lpae`]
/// chose).
pub fn park() {
    if LPAE.load(Ordering::SeqCst) {
        let _ = switch_to_lpae(PARK_LPAE.get());
    } else {
        let _ = switch_to(PARK.get());
    }
}

/// Parks `TTBR0` on the parking table but keeps the current ASID (a lazy switch: entries
/// of the space this CPU ran stay usable under that ASID until a broadcast invalidate
/// removes them). Legitimate because the parking table maps nothing but the UART page,
/// exactly as every user table does.
pub fn park_keeping_asid() {
    // A bare TTBR0 write, not the crate's switch: the crate's switch would see the ASID
    // used over another table and drop its entries locally, and the point here is that
    // they stay until a *broadcast* invalidate. (The crate's own way to leave user space
    // is `mmu::park`, TTBCR.PD0, which this kernel cannot use: its UART is below the
    // split.) The parking table maps the UART page like every user table.
    armv7_mm::arch::barrier::dsb_ishst();
    armv7_mm::arch::cp15::TTBR0.set(mmu::ttbr_value(PARK.get().root()));
    armv7_mm::arch::barrier::isb();
}

// ---- The watched slots and the readers -----------------------------------------------

/// Most watched VAs.
pub const MAX_SLOTS: usize = 64;

/// Slot state: anything legal may be read (in transition, or mapped).
pub const OPEN: u8 = 0;
/// Slot state: unmapped by a gather that has finished: reads must fault.
pub const FLUSHED: u8 = 1;

static SLOT_VA: [AtomicU32; MAX_SLOTS] = [const { AtomicU32::new(0) }; MAX_SLOTS];
/// Per slot: `(changes << 1) | flushed`. The change count makes a reader that saw
/// "flushed" before and after its read sure that it was the *same* flushed period (not
/// flushed, remapped, read, and flushed again while the reader's vCPU was descheduled).
static SLOT_STATE: [AtomicU32; MAX_SLOTS] = [const { AtomicU32::new(0) }; MAX_SLOTS];
static NSLOTS: AtomicUsize = AtomicUsize::new(0);

/// The value every word of the frame mapped at `va` holds.
pub const fn content(va: u32) -> u32 {
    0xc0de_0000 | ((va >> 12) & 0xffff)
}

/// Watches these VAs (readers read them in this order).
pub fn watch(vas: &[u32]) {
    assert!(vas.len() <= MAX_SLOTS);
    for (i, &va) in vas.iter().enumerate() {
        SLOT_VA[i].store(va, Ordering::SeqCst);
        SLOT_STATE[i].store(0, Ordering::SeqCst);
    }
    NSLOTS.store(vas.len(), Ordering::SeqCst);
}

/// Marks slot `i` (must fault from now on, or anything legal).
pub fn mark(i: usize, state: u8) {
    let old = SLOT_STATE[i].load(Ordering::SeqCst);
    SLOT_STATE[i].store(
        ((old >> 1).wrapping_add(1) << 1) | u32::from(state),
        Ordering::SeqCst,
    );
}

/// The space the readers run (set before they start).
pub static READ_SPACE: Slot<&'static Space> = Slot::new();
static STOP: AtomicBool = AtomicBool::new(false);
static READERS: AtomicU32 = AtomicU32::new(0);
static PASSES: [AtomicU32; CPUS] = [const { AtomicU32::new(0) }; CPUS];
static READS: [AtomicU32; CPUS] = [const { AtomicU32::new(0) }; CPUS];
static STALE: [AtomicU32; CPUS] = [const { AtomicU32::new(0) }; CPUS];
/// First stale read: cpu + 1 (0: none), VA, value, kind.
static FIRST: [AtomicU32; 4] = [const { AtomicU32::new(0) }; 4];
/// Whether the readers park keeping their ASID (teardown case) instead of switching.
static PARK_LAZY: AtomicBool = AtomicBool::new(false);
/// Readers switch to this space when the flag is set (teardown case: ASID reuse).
pub static SWITCH_TO: Slot<&'static Space> = Slot::new();
static SWITCH_REQ: AtomicU32 = AtomicU32::new(0);
static SWITCH_DONE: [AtomicU32; CPUS] = [const { AtomicU32::new(0) }; CPUS];

/// Kinds of stale reads.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u32)]
pub enum StaleKind {
    Poison = 1,
    OtherMapping = 2,
    Secret = 3,
    SurvivedFlush = 4,
    WrongFault = 5,
    Garbage = 6,
}

fn kind_name(k: u32) -> &'static str {
    match k {
        1 => "poison: a handed-back frame was read through a stale translation",
        2 => "another VA's content: a reused frame was read through a stale translation",
        3 => "the secret: a walk went through a freed, reused table",
        4 => "the old content after the gather that unmapped it had finished",
        5 => "a fault that is not a translation fault",
        _ => "unexpected data",
    }
}

fn record_stale(cpu: usize, va: u32, value: u32, kind: StaleKind) {
    STALE[cpu].fetch_add(1, Ordering::SeqCst);
    if FIRST[0]
        .compare_exchange(0, cpu as u32 + 1, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok()
    {
        FIRST[1].store(va, Ordering::SeqCst);
        FIRST[2].store(value, Ordering::SeqCst);
        FIRST[3].store(kind as u32, Ordering::SeqCst);
    }
}

/// Checks one value read at `va` (or the fault) on `cpu`; `flushed` if the slot was
/// [`FLUSHED`] both before and after the read.
pub fn check_read(cpu: usize, va: u32, r: Result<u32, fault::Fault>, flushed: bool) {
    match r {
        Ok(v) if v == content(va) => {
            if flushed {
                record_stale(cpu, va, v, StaleKind::SurvivedFlush);
            }
        }
        Ok(v) => {
            let kind = if v == POISON {
                StaleKind::Poison
            } else if v == SECRET {
                StaleKind::Secret
            } else if v >> 16 == 0xc0de {
                StaleKind::OtherMapping
            } else {
                StaleKind::Garbage
            };
            record_stale(cpu, va, v, kind);
        }
        Err(f) if f.class() == FaultClass::Translation => {}
        Err(f) => record_stale(cpu, va, f.status, StaleKind::WrongFault),
    }
}

/// One pass over the watched slots.
fn read_pass(cpu: usize) {
    let n = NSLOTS.load(Ordering::SeqCst);
    for i in 0..n {
        let va = SLOT_VA[i].load(Ordering::Relaxed);
        let s1 = SLOT_STATE[i].load(Ordering::SeqCst);
        let r = fault::read32_user(va as usize);
        fence(Ordering::SeqCst);
        let s2 = SLOT_STATE[i].load(Ordering::SeqCst);
        check_read(cpu, va, r, s1 == s2 && s1 & 1 == u32::from(FLUSHED));
    }
    READS[cpu].fetch_add(n as u32, Ordering::Relaxed);
    PASSES[cpu].fetch_add(1, Ordering::SeqCst);
}

/// The reader loop: on [`READ_SPACE`] until [`stop_readers`]. Also serves a switch
/// request ([`readers_switch`]) between passes. Ends parked (or lazily parked).
pub fn reader(cpu: usize) {
    let _ = switch_to(READ_SPACE.get());
    READERS.fetch_or(1 << cpu, Ordering::SeqCst);
    let mut served = 0;
    while !STOP.load(Ordering::SeqCst) {
        read_pass(cpu);
        let req = SWITCH_REQ.load(Ordering::SeqCst);
        if req != served {
            served = req;
            if PARK_LAZY.load(Ordering::SeqCst) && req == 1 {
                park_keeping_asid();
            } else {
                let _ = switch_to(SWITCH_TO.get());
            }
            SWITCH_DONE[cpu].store(req, Ordering::SeqCst);
        }
    }
    READERS.fetch_and(!(1 << cpu), Ordering::SeqCst);
    park();
}

/// Starts readers on `cpus` (a list of secondaries) over `space`.
pub fn start_readers(space: &'static Space, cpus: &[usize], lazy_park: bool) {
    start_readers_with(space, cpus, lazy_park, reader);
}

/// [`start_readers`] with another entry on the reader CPUs (one that prepares the CPU,
/// e.g. takes interrupts, then calls [`reader`]).
pub fn start_readers_with(
    space: &'static Space,
    cpus: &[usize],
    lazy_park: bool,
    entry: fn(usize),
) {
    STOP.store(false, Ordering::SeqCst);
    PARK_LAZY.store(lazy_park, Ordering::SeqCst);
    SWITCH_REQ.store(0, Ordering::SeqCst);
    for c in 0..CPUS {
        READS[c].store(0, Ordering::SeqCst);
        STALE[c].store(0, Ordering::SeqCst);
        SWITCH_DONE[c].store(0, Ordering::SeqCst);
    }
    for f in &FIRST {
        f.store(0, Ordering::SeqCst);
    }
    READ_SPACE.put(space);
    for &cpu in cpus {
        rt::smp::start(cpu, entry);
    }
    let want: u32 = cpus.iter().map(|c| 1 << c).sum();
    while READERS.load(Ordering::SeqCst) & want != want {
        core::hint::spin_loop();
    }
    // Every reader has done a pass: their TLBs hold the mapped slots.
    readers_pass(2);
}

/// Asks every reader to switch (request number `req`, 1, 2, ...) after its current pass:
/// request 1 with lazy parking parks keeping the ASID, any other switches to
/// [`SWITCH_TO`]. Returns once all have.
pub fn readers_switch(req: u32) {
    let mask = READERS.load(Ordering::SeqCst);
    SWITCH_REQ.store(req, Ordering::SeqCst);
    for cpu in 0..CPUS {
        if mask & (1 << cpu) != 0 {
            while SWITCH_DONE[cpu].load(Ordering::SeqCst) != req {
                core::hint::spin_loop();
            }
        }
    }
}

/// Waits until every running reader has completed `n` more passes (with `n >= 2`, at
/// least one whole pass started after this call).
pub fn readers_pass(n: u32) {
    let mask = READERS.load(Ordering::SeqCst);
    let mut target = [0u32; CPUS];
    for cpu in 0..CPUS {
        target[cpu] = PASSES[cpu].load(Ordering::SeqCst).wrapping_add(n);
    }
    for cpu in 0..CPUS {
        if mask & (1 << cpu) != 0 {
            while (PASSES[cpu].load(Ordering::SeqCst).wrapping_sub(target[cpu]) as i32) < 0 {
                if READERS.load(Ordering::SeqCst) & (1 << cpu) == 0 {
                    break;
                }
                core::hint::spin_loop();
            }
        }
    }
}

/// Stops the readers, waits for them; returns (reads, stale) summed over them.
pub fn stop_readers(cpus: &[usize]) -> (u64, u64) {
    STOP.store(true, Ordering::SeqCst);
    for &cpu in cpus {
        rt::smp::wait(cpu);
    }
    // SAFETY: every reader has returned; nobody uses the reference any more.
    let _ = unsafe { READ_SPACE.take() };
    reader_totals()
}

/// (reads, stale) so far, summed over all CPUs.
pub fn reader_totals() -> (u64, u64) {
    let reads = READS.iter().map(|r| r.load(Ordering::SeqCst) as u64).sum();
    let stale = STALE.iter().map(|r| r.load(Ordering::SeqCst) as u64).sum();
    (reads, stale)
}

/// Per-CPU (reads, stale).
pub fn reader_counts(cpu: usize) -> (u32, u32) {
    (
        READS[cpu].load(Ordering::SeqCst),
        STALE[cpu].load(Ordering::SeqCst),
    )
}

/// Prints the first stale read (if any) with the word "STALE".
pub fn report_first_stale() {
    let cpu = FIRST[0].load(Ordering::SeqCst);
    if cpu == 0 {
        return;
    }
    let (va, v, k) = (
        FIRST[1].load(Ordering::SeqCst),
        FIRST[2].load(Ordering::SeqCst),
        FIRST[3].load(Ordering::SeqCst),
    );
    println!(
        "    STALE: cpu {} read {va:#010x} -> {v:#010x}: {}",
        cpu - 1,
        kind_name(k)
    );
}

// ---- The frame pool and the hand-back ------------------------------------------------

const POOL_MAX: usize = 256;

struct Pool {
    ring: [u32; POOL_MAX],
    head: usize,
    len: usize,
    /// Every frame the pool owns (for returning them all at the end).
    owned: [u32; POOL_MAX],
    nowned: usize,
}

static POOL: spin::Mutex<Pool> = spin::Mutex::new(Pool {
    ring: [0; POOL_MAX],
    head: 0,
    len: 0,
    owned: [0; POOL_MAX],
    nowned: 0,
});
/// Frames handed back so far.
pub static HANDED_BACK: AtomicU32 = AtomicU32::new(0);
/// Hand-backs that waited for the readers.
pub static HANDSHAKES: AtomicU32 = AtomicU32::new(0);
/// Armed: the next hand-back waits until every reader has made a full pass (see
/// [`arm_handshake`]).
static HANDSHAKE: AtomicBool = AtomicBool::new(false);

/// Makes the next frame handed back wait, poisoned, until every reader has read every
/// watched VA once more. That makes a stale translation to it show up whatever the
/// scheduling. Not every hand-back waits: with four vCPU threads on fewer host cores a
/// wait costs a host time slice (milliseconds), so the zappers arm it for a sample of
/// rounds.
pub fn arm_handshake() {
    HANDSHAKE.store(true, Ordering::SeqCst);
}

/// Fills the pool with `n` fresh frames from the runtime allocator.
pub fn pool_fill(n: usize) {
    let mut p = POOL.lock();
    assert!(p.nowned + n <= POOL_MAX);
    for _ in 0..n {
        let pa = rt::frames::alloc(1, 4096).expect("pool frame").as_u64() as u32;
        let (i, o) = ((p.head + p.len) % POOL_MAX, p.nowned);
        p.ring[i] = pa;
        p.len += 1;
        p.owned[o] = pa;
        p.nowned += 1;
    }
}

/// Takes the oldest frame of the pool.
pub fn pool_take() -> u32 {
    let mut p = POOL.lock();
    assert!(p.len > 0, "pool empty");
    let pa = p.ring[p.head];
    p.head = (p.head + 1) % POOL_MAX;
    p.len -= 1;
    pa
}

fn pool_put(pa: u32) {
    let mut p = POOL.lock();
    assert!(p.len < POOL_MAX);
    let i = (p.head + p.len) % POOL_MAX;
    p.ring[i] = pa;
    p.len += 1;
}

fn pool_owns(pa: u32) -> bool {
    let p = POOL.lock();
    p.owned[..p.nowned].contains(&pa)
}

/// Frames in the pool now.
pub fn pool_len() -> usize {
    POOL.lock().len
}

/// Returns every pool frame to the runtime allocator (all must be back in the pool).
pub fn pool_drain() {
    let mut p = POOL.lock();
    assert_eq!(p.len, p.nowned, "pool frames still mapped");
    for i in 0..p.nowned {
        rt::frames::free(PhysAddr::new(p.owned[i] as u64), 1);
    }
    p.len = 0;
    p.head = 0;
    p.nowned = 0;
}

/// Maps slot VA `va` to a pool frame holding [`content`]`(va)`.
pub fn map_from_pool(g: &mut armv7_mm::locked::SpaceGuard<'_, KernelMemory>, va: u32) {
    let pa = pool_take();
    fill(pa, 4096, content(va));
    // The content is visible before the descriptor that leads to it.
    dsb_ish();
    g.map(
        range(va, 4096),
        PhysAddr::new(pa as u64),
        Attributes::USER_DATA,
        MapSize::Page4K,
    )
    .unwrap_or_else(|e| panic!("map {va:#x}: {e:?}"));
}

/// The `Memory` gathers hand frames back to (see the module docs).
#[derive(Clone, Copy, Debug, Default)]
pub struct PoolMemory;

// SAFETY: allocation and `phys_to_virt` are the runtime's allocator (see `KernelMemory`).
unsafe impl Memory for PoolMemory {
    fn allocate_frames(&mut self, count: usize, align: usize) -> Option<PhysAddr> {
        KernelMemory.allocate_frames(count, align)
    }
    fn free_frames(&mut self, pa: PhysAddr, count: usize) {
        KernelMemory.free_frames(pa, count)
    }
    fn phys_to_virt(&self, pa: PhysAddr) -> NonNull<u8> {
        KernelMemory.phys_to_virt(pa)
    }
    fn release_mapped(&mut self, _va: VirtAddr, pa: PhysAddr, bytes: usize) {
        // Only pool frames come back to the pool; anything else mapped (the UART page)
        // is not memory of ours.
        if pool_owns(pa.as_u64() as u32) {
            assert_eq!(bytes, 4096, "the tests map pages only");
            hand_back(pa.as_u64() as u32);
        }
    }
}

/// The moment a mapped frame comes back: poison, let every reader look (if armed),
/// reuse.
pub fn hand_back(pa: u32) {
    fill(pa, 4096, POISON);
    dsb_ish();
    if HANDSHAKE.swap(false, Ordering::SeqCst) {
        readers_pass(2);
        HANDSHAKES.fetch_add(1, Ordering::SeqCst);
    }
    HANDED_BACK.fetch_add(1, Ordering::SeqCst);
    pool_put(pa);
}

/// While set, the runtime allocator's free hook fills every freed frame (table frames,
/// and the gathers' batch frames, which are harmless to fill) with small-page
/// descriptors (user read/write) to the secret frame, as if reused by someone who put a
/// table there.
pub static GARBAGE_TABLES: AtomicBool = AtomicBool::new(false);
/// Frames garbage-filled so far.
pub static GARBAGE_FILLED: AtomicU32 = AtomicU32::new(0);

fn table_free_hook(pa: PhysAddr, count: usize) {
    if !GARBAGE_TABLES.load(Ordering::SeqCst) {
        return;
    }
    let secret = SECRET_PA.load(Ordering::SeqCst);
    // Small page, nG, AP = user RW, cacheable: valid-looking to any walker.
    fill(pa.as_u64() as u32, 4096 * count as u32, secret | 0xa3e);
    dsb_ish();
    GARBAGE_FILLED.fetch_add(count as u32, Ordering::SeqCst);
}

/// A `Memory` that never hands mapped frames back (the test owns them; used where only
/// tables are churned). Tables and batch frames go to the runtime allocator.
#[derive(Clone, Copy, Debug, Default)]
pub struct KeepMapped;

// SAFETY: allocation and `phys_to_virt` are the runtime's allocator (see `KernelMemory`).
unsafe impl Memory for KeepMapped {
    fn allocate_frames(&mut self, count: usize, align: usize) -> Option<PhysAddr> {
        KernelMemory.allocate_frames(count, align)
    }
    fn free_frames(&mut self, pa: PhysAddr, count: usize) {
        KernelMemory.free_frames(pa, count)
    }
    fn phys_to_virt(&self, pa: PhysAddr) -> NonNull<u8> {
        KernelMemory.phys_to_virt(pa)
    }
    fn release_mapped(&mut self, _: VirtAddr, _: PhysAddr, _: usize) {}
}

/// [`Bug::FreeEarly`]: hands mapped frames back the moment the walker reports them (put
/// it next to a gather whose memory keeps mapped frames, [`KeepMapped`]: the gather still
/// flushes, and frees the tables, afterwards).
pub struct FreeAtOnce;

impl armv7_mm::UnmapSink for FreeAtOnce {
    // Not a protect sink: nothing to invalidate or flush early here.
    fn leaf_changed(&mut self, _: armv7_mm::ChangedLeaf) {}
    fn flush_now(&mut self) {}
    fn leaf_cleared(&mut self, leaf: armv7_mm::ClearedLeaf) {
        PoolMemory.release_mapped(leaf.va, leaf.pa, leaf.size.bytes() as usize);
    }
    fn table_unlinked(&mut self, _: VirtAddr, _: u64, _: bool) {}
    fn table_memory_freed(&mut self, _: PhysAddr, _: usize) {}
}

/// The secret frame's PA.
pub fn secret_pa() -> u32 {
    SECRET_PA.load(Ordering::SeqCst)
}

/// The stress tests' xorshift generator (reproducible rounds).
pub struct Rng(pub u32);

impl Rng {
    pub fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        self.0
    }
}

/// Watched slots a stress round zaps, and the 4 MiB group it zaps with its table, if any.
pub struct StressRound<const N: usize> {
    pub slots: [usize; N],
    pub n: usize,
    pub group: Option<u32>,
}

/// Round `round` of a stress over `slots` watched pages, `N` to a 4 MiB `group_bytes`
/// group from `base`: every 16th round a whole group (its table freed too), otherwise 1-4
/// slots at a random stride (distinct: the stride is below 8 and `slots` no multiple of it
/// times fewer than 4).
pub fn stress_round<const N: usize>(
    round: u32,
    rng: &mut Rng,
    slots: usize,
    base: u32,
    group_bytes: u32,
) -> StressRound<N> {
    let mut out = [0usize; N];
    if round % 16 == 15 {
        let g = (round / 16) as usize % (slots / N);
        for (k, s) in out.iter_mut().enumerate() {
            *s = g * N + k;
        }
        StressRound {
            slots: out,
            n: N,
            group: Some(base + g as u32 * group_bytes),
        }
    } else {
        let n = 1 + rng.next() as usize % 4;
        let first = rng.next() as usize % slots;
        let stride = 1 + rng.next() as usize % 7;
        for (k, s) in out.iter_mut().enumerate().take(n) {
            *s = (first + k * stride) % slots;
        }
        StressRound {
            slots: out,
            n,
            group: None,
        }
    }
}

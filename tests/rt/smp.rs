//! Secondary CPUs: started with PSCI `CPU_ON` through `hvc #0` on `virt`, or released from
//! the runtime's pen on the boards that start every CPU at the ELF entry
//! ([`crate::board::Secondaries`]); each runs on its own stack and vectors (the shared
//! `_start` path), with the MMU configured exactly as CPU 0 had it when it started them,
//! then runs the function CPU 0 gave them. Both ways look the same to a test.
//!
//! ```ignore
//! rt::smp::start(1, reader);     // CPU 1 runs `reader(1)`
//! ...
//! rt::smp::wait(1);              // until `reader` returned
//! ```
//!
//! A secondary starts on CPU 0's `TTBR0`/ASID; a test that wants it on another address
//! space switches there itself (e.g. `LockedAddressSpace::activate`) at the top of its
//! function. [`start_all`]/[`wait_all`] run one function on every secondary, and
//! [`Barrier`] lines CPUs up inside a test.

use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use armv7_mm::arch::barrier::{dsb_sy, isb};
use armv7_mm::arch::cp15::{
    CONTEXTIDR, DACR, NMRR, PRRR, SCTLR, TTBCR, TTBR0, TTBR0_64, TTBR1, TTBR1_64,
};
use armv7_mm::arch::tlbi;
use tock_registers::interfaces::{Readable, Writeable};

use crate::board::{Secondaries, SECONDARIES};
use crate::start::MAX_CPUS;

const PSCI_CPU_ON: u32 = 0x8400_0003;

/// CPU state: 0 = off, 1 = starting, 2 = running its function, 3 = done.
static STATE: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static WORK: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];

/// CPU 0's MMU context, copied into each secondary before it turns its MMU on.
#[derive(Clone, Copy)]
struct MmuContext {
    ttbcr: u32,
    /// The 64-bit registers with LPAE (`TTBCR.EAE`), the 32-bit ones zero-extended without.
    ttbr0: u64,
    ttbr1: u64,
    dacr: u32,
    prrr: u32,
    nmrr: u32,
    contextidr: u32,
    sctlr: u32,
}

static CONTEXT: spin::Mutex<Option<MmuContext>> = spin::Mutex::new(None);

/// The pen of [`Secondaries::Pen`] boards: `_start` holds CPU n (n > 0) until word n is
/// non-zero. In `.data`, not `.bss`: the secondaries poll it from reset on, before and
/// while CPU 0 clears `.bss`.
#[no_mangle]
#[link_section = ".data.rt_pen"]
pub(crate) static RT_PEN: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];

/// Lets `cpu` out of the pen: the word is cleaned to the point of coherency because the
/// waiting CPU reads it with its MMU and caches off, then `sev` wakes it from `wfe`.
fn release_from_pen(cpu: usize) {
    RT_PEN[cpu].store(1, Ordering::SeqCst);
    armv7_mm::arch::mmu::clean_dcache_for_walker(RT_PEN[cpu].as_ptr() as usize, 4);
    dsb_sy();
    // SAFETY: `sev` only wakes CPUs waiting in `wfe`.
    unsafe { core::arch::asm!("sev", options(nomem, nostack)) };
}

fn psci_cpu_on(target: u32, entry: u32) -> i32 {
    let ret: u32;
    // SAFETY: QEMU's `virt` implements PSCI through `hvc #0` when it boots the kernel
    // without EL2/EL3 firmware; the call only powers the target CPU on at `entry`.
    unsafe {
        core::arch::asm!(
            ".arch_extension virt",
            "hvc #0",
            inout("r0") PSCI_CPU_ON => ret,
            in("r1") target,
            in("r2") entry,
            in("r3") 0u32,
            options(nostack)
        );
    }
    ret as i32
}

/// Starts `cpu` (1..MAX_CPUS) running `work(cpu)` with this CPU's current translation
/// regime. Panics if PSCI refuses (the test then fails with the PSCI error).
pub fn start(cpu: usize, work: fn(usize)) {
    assert!(cpu > 0 && cpu < MAX_CPUS, "no such secondary CPU {cpu}");
    let lpae = TTBCR.get() & (1 << 31) != 0;
    *CONTEXT.lock() = Some(MmuContext {
        ttbcr: TTBCR.get(),
        ttbr0: if lpae {
            TTBR0_64.get()
        } else {
            u64::from(TTBR0.get())
        },
        ttbr1: if lpae {
            TTBR1_64.get()
        } else {
            u64::from(TTBR1.get())
        },
        dacr: DACR.get(),
        prrr: PRRR.get(),
        nmrr: NMRR.get(),
        contextidr: CONTEXTIDR.get(),
        sctlr: SCTLR.get(),
    });
    WORK[cpu].store(work as usize, Ordering::SeqCst);
    let previous = STATE[cpu].swap(1, Ordering::SeqCst);
    if previous == 3 {
        // Already running our idle loop from an earlier `start`: it picks the work up.
        dsb_sy();
        // SAFETY: `sev` only wakes CPUs waiting in `wfe`.
        unsafe { core::arch::asm!("sev", options(nomem, nostack)) };
        return;
    }
    assert_eq!(previous, 0, "cpu {cpu} is still busy");
    if SECONDARIES == Secondaries::Pen {
        // No PSCI to refuse a CPU that does not exist: released, it would never run.
        assert!(cpu < cpus(), "no cpu {cpu}: QEMU runs {} CPUs", cpus());
        release_from_pen(cpu);
        return;
    }
    extern "C" {
        fn _start();
    }
    let rc = psci_cpu_on(cpu as u32, _start as *const () as usize as u32);
    assert_eq!(rc, 0, "PSCI CPU_ON({cpu}) failed with {rc}");
}

/// Waits until `cpu` has returned from the function given to [`start`].
pub fn wait(cpu: usize) {
    while STATE[cpu].load(Ordering::SeqCst) != 3 {
        core::hint::spin_loop();
    }
}

/// Whether `cpu` has returned from its function.
pub fn done(cpu: usize) -> bool {
    STATE[cpu].load(Ordering::SeqCst) == 3
}

/// Starts every secondary CPU (1..[`cpus`]) on `work`.
pub fn start_all(work: fn(usize)) {
    for cpu in 1..cpus() {
        start(cpu, work);
    }
}

/// Waits until every secondary CPU has returned from its function.
pub fn wait_all() {
    for cpu in 1..cpus() {
        wait(cpu);
    }
}

/// Whether this CPU implements the generic timer (`ID_PFR1[19:16]`): Cortex-A7 and A15 do,
/// the Cortex-A9 does not.
fn has_generic_timer() -> bool {
    let pfr1: u32;
    // SAFETY: reading ID_PFR1 at PL1 has no side effects.
    unsafe {
        core::arch::asm!("mrc p15, 0, {}, c0, c1, 1", out(reg) pfr1,
            options(nomem, nostack, preserves_flags));
    }
    (pfr1 >> 16) & 0xf != 0
}

/// Per CPU: the last 64-bit cycle count [`uptime_us`] computed from the 32-bit `PMCCNTR`.
static CYCLES: [core::sync::atomic::AtomicU64; MAX_CPUS] =
    [const { core::sync::atomic::AtomicU64::new(0) }; MAX_CPUS];

/// Per CPU, what [`uptime_us`] counts without a generic timer: 0 not decided yet,
/// 1 the cycle counter, 2 calls (the cycle counter does not run).
static CLOCK: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];

/// Microseconds of wall-clock time on QEMU, for reporting how long a multi-core case took
/// and for bounded waits: the generic timer's virtual counter (`CNTVCT`, at `CNTFRQ`) where
/// there is one. A CPU without it (Cortex-A9) uses its cycle counter (1 GHz), extended to
/// 64 bits per CPU, if that runs; QEMU 7.2's Cortex-A9 has no running one, and then every
/// call counts as one microsecond: bounded waits stay bounded, but the times reported are
/// not wall-clock (the boards' timers are MMIO the tests' maps do not include). Compare
/// readings taken on one CPU only: without the generic timer each CPU counts on its own.
pub fn uptime_us() -> u64 {
    if !has_generic_timer() {
        let cpu = crate::cpu_id().min(MAX_CPUS - 1);
        let mut clock = CLOCK[cpu].load(Ordering::Relaxed);
        if clock == 0 {
            crate::pmu::init();
            clock = if crate::pmu::running() { 1 } else { 2 };
            CLOCK[cpu].store(clock, Ordering::Relaxed);
        }
        if clock == 2 {
            return CYCLES[cpu].fetch_add(1, Ordering::Relaxed) + 1;
        }
        let now = crate::pmu::cycles();
        let last = CYCLES[cpu].load(Ordering::Relaxed);
        let mut full = (last & !0xffff_ffff) | u64::from(now);
        if full < last {
            full += 1 << 32;
        }
        CYCLES[cpu].store(full, Ordering::Relaxed);
        return full / 1000;
    }
    let (lo, hi): (u32, u32);
    let freq: u32;
    // SAFETY: reading CNTVCT and CNTFRQ at PL1 has no side effects (checked above: this CPU
    // implements the generic timer).
    unsafe {
        core::arch::asm!("isb", "mrrc p15, 1, {lo}, {hi}, c14", "mrc p15, 0, {f}, c14, c0, 0",
            lo = out(reg) lo, hi = out(reg) hi, f = out(reg) freq, options(nostack));
    }
    let ticks = (u64::from(hi) << 32) | u64::from(lo);
    ticks * 1_000_000 / u64::from(freq.max(1))
}

/// A reusable spin barrier for a fixed number of CPUs.
pub struct Barrier {
    parties: u32,
    arrived: AtomicU32,
    generation: AtomicU32,
}

impl Barrier {
    /// A barrier that opens when `parties` CPUs wait on it.
    pub const fn new(parties: u32) -> Self {
        Self {
            parties,
            arrived: AtomicU32::new(0),
            generation: AtomicU32::new(0),
        }
    }

    /// Waits until all parties have arrived (then the barrier is ready for the next round).
    pub fn wait(&self) {
        let generation = self.generation.load(Ordering::SeqCst);
        if self.arrived.fetch_add(1, Ordering::SeqCst) + 1 == self.parties {
            self.arrived.store(0, Ordering::SeqCst);
            self.generation.fetch_add(1, Ordering::SeqCst);
        } else {
            while self.generation.load(Ordering::SeqCst) == generation {
                core::hint::spin_loop();
            }
        }
    }
}

/// Number of CPUs QEMU was started with (`smp=<n>` argument from the harness; 1 if absent).
pub fn cpus() -> usize {
    crate::arg("smp")
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .min(MAX_CPUS)
}

pub(crate) fn secondary_main(cpu: usize) -> ! {
    let ctx = (*CONTEXT.lock()).expect("secondary started without a context");
    // Turn the MMU on with CPU 0's translation regime. The MMU is off, so the TLB may hold
    // nothing useful; invalidate it locally first.
    TTBCR.set(ctx.ttbcr);
    isb();
    if ctx.ttbcr & (1 << 31) != 0 {
        // LPAE: PRRR/NMRR below are MAIR0/MAIR1 (same encodings).
        TTBR0_64.set(ctx.ttbr0);
        TTBR1_64.set(ctx.ttbr1);
    } else {
        TTBR0.set(ctx.ttbr0 as u32);
        TTBR1.set(ctx.ttbr1 as u32);
    }
    DACR.set(ctx.dacr);
    PRRR.set(ctx.prrr);
    NMRR.set(ctx.nmrr);
    CONTEXTIDR.set(ctx.contextidr);
    tlbi::tlbiall(0);
    tlbi::iciallu(0);
    tlbi::bpiall(0);
    dsb_sy();
    isb();
    SCTLR.set(ctx.sctlr);
    isb();
    loop {
        let work = WORK[cpu].load(Ordering::SeqCst);
        STATE[cpu].store(2, Ordering::SeqCst);
        // SAFETY: `start` stored a `fn(usize)` in WORK before setting STATE to 1.
        let f: fn(usize) = unsafe { core::mem::transmute::<usize, fn(usize)>(work) };
        f(cpu);
        STATE[cpu].store(3, Ordering::SeqCst);
        // Idle until `start` hands us more work.
        while STATE[cpu].load(Ordering::SeqCst) == 3 {
            // SAFETY: `wfe` only waits for an event.
            unsafe { core::arch::asm!("wfe", options(nomem, nostack)) };
        }
    }
}

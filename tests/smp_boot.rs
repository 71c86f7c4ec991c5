//! qemu: machine=virt,vexpress-a9,raspi2b cpu=cortex-a15,cortex-a7 smp=4 mem=128
//!
//! The multi-core runtime: CPU 0 turns the MMU on, starts CPUs 1-3 (PSCI `CPU_ON`, or the pen),
//! and each secondary runs with its own stack, its own vectors (an expected fault on it is
//! caught by its own abort handler) and the MMU on over CPU 0's tables.

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use rt::fault::FaultClass;
use rt::{ensure, ensure_eq, println, Case, CaseResult};

rt::entry!(main);

fn main() -> ! {
    rt::mmu::enable_identity(rt::ram_size());
    rt::cases::run(&[
        Case {
            name: "secondaries_run_with_mmu",
            run: secondaries_run,
        },
        Case {
            name: "secondaries_take_work_again",
            run: work_again,
        },
    ])
}

static SEEN: [AtomicU32; 4] = [const { AtomicU32::new(0) }; 4];
static STACKS: [AtomicUsize; 4] = [const { AtomicUsize::new(0) }; 4];

fn on_secondary(cpu: usize) {
    use armv7_mm::arch::cp15::{SCTLR, SCTLR_BITS};
    use tock_registers::interfaces::Readable;
    let local = 0u32;
    STACKS[cpu].store(core::ptr::addr_of!(local) as usize, Ordering::SeqCst);
    let mmu_on = SCTLR.is_set(SCTLR_BITS::M);
    let faulted =
        matches!(rt::fault::read32(0x2000_0000), Err(f) if f.class() == FaultClass::Translation);
    let code = 0x100 * u32::from(mmu_on) + 0x10 * u32::from(faulted) + rt::cpu_id() as u32;
    SEEN[cpu].store(code, Ordering::SeqCst);
}

fn secondaries_run() -> CaseResult {
    let n = rt::smp::cpus();
    ensure!(n == 4, "expected 4 CPUs from the harness, got {}", n);
    for cpu in 1..n {
        rt::smp::start(cpu, on_secondary);
    }
    for cpu in 1..n {
        rt::smp::wait(cpu);
        let code = SEEN[cpu].load(Ordering::SeqCst);
        println!(
            "    cpu {}: mmu {}, fault caught {}",
            cpu,
            code >> 8,
            (code >> 4) & 1
        );
        ensure_eq!(
            code,
            0x110 + cpu as u32,
            "cpu {} state (mmu<<8 | fault<<4 | id)",
            cpu
        );
    }
    for a in 1..n {
        for b in a + 1..n {
            let (sa, sb) = (
                STACKS[a].load(Ordering::SeqCst),
                STACKS[b].load(Ordering::SeqCst),
            );
            ensure!(
                sa.abs_diff(sb) >= 4096,
                "cpus {} and {} share a stack",
                a,
                b
            );
        }
    }
    Ok(())
}

static COUNT: AtomicU32 = AtomicU32::new(0);

fn bump(_cpu: usize) {
    COUNT.fetch_add(1, Ordering::SeqCst);
}

fn work_again() -> CaseResult {
    let n = rt::smp::cpus();
    for round in 0..3 {
        for cpu in 1..n {
            rt::smp::start(cpu, bump);
        }
        for cpu in 1..n {
            rt::smp::wait(cpu);
        }
        ensure_eq!(
            COUNT.load(Ordering::SeqCst),
            ((round + 1) * (n - 1)) as u32,
            "round {}",
            round
        );
    }
    Ok(())
}

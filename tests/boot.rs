//! qemu: cpu=cortex-a15,cortex-a7 smp=1 mem=128
//!
//! First boot test: the MMU comes on over an identity map, the console works through it,
//! and an access to an unmapped address takes a translation fault that the runtime reports
//! to the test instead of failing it.

#![no_std]
#![no_main]

use rt::fault::{self, AbortKind, FaultClass};
use rt::{ensure, ensure_eq, println, Case, CaseResult};

rt::entry!(main);

fn main() -> ! {
    println!("boot: cpu {} up, cmdline '{}'", rt::cpu_id(), rt::cmdline());
    rt::mmu::enable_identity(rt::ram_size());
    println!("boot: MMU on");
    rt::cases::run(&[
        Case {
            name: "mmu_enabled",
            run: mmu_enabled,
        },
        Case {
            name: "ram_reads_through_mmu",
            run: ram_reads,
        },
        Case {
            name: "unmapped_read_faults",
            run: unmapped_read_faults,
        },
        Case {
            name: "unmapped_write_faults",
            run: unmapped_write_faults,
        },
        Case {
            name: "unmapped_exec_faults",
            run: unmapped_exec_faults,
        },
        Case {
            name: "frame_allocator_counts",
            run: frame_allocator_counts,
        },
    ])
}

fn mmu_enabled() -> CaseResult {
    use armv7_mm::arch::cp15::{SCTLR, SCTLR_BITS};
    use tock_registers::interfaces::Readable;
    ensure!(SCTLR.is_set(SCTLR_BITS::M), "SCTLR.M clear after enable");
    Ok(())
}

fn ram_reads() -> CaseResult {
    static WORD: u32 = 0x5eed_cafe;
    let v = fault::read32(core::ptr::addr_of!(WORD) as usize);
    ensure_eq!(v, Ok(0x5eed_cafe), "identity-mapped read");
    Ok(())
}

/// An address in no section of the identity map.
const UNMAPPED: usize = 0x2000_0000;

fn unmapped_read_faults() -> CaseResult {
    let f = match fault::read32(UNMAPPED) {
        Ok(v) => {
            println!("    read of unmapped {:#x} returned {:#x}", UNMAPPED, v);
            return Err(());
        }
        Err(f) => f,
    };
    ensure_eq!(f.kind, AbortKind::Data, "abort kind");
    ensure_eq!(f.class(), FaultClass::Translation, "DFSR {:#x}", f.status);
    ensure_eq!(f.address as usize, UNMAPPED, "DFAR");
    Ok(())
}

fn unmapped_write_faults() -> CaseResult {
    // SAFETY: the address is unmapped, so the store cannot reach memory.
    let r = unsafe { fault::write32(UNMAPPED + 8, 1) };
    let f = match r {
        Ok(()) => {
            println!("    write to unmapped address succeeded");
            return Err(());
        }
        Err(f) => f,
    };
    ensure_eq!(f.class(), FaultClass::Translation, "DFSR {:#x}", f.status);
    ensure_eq!(f.address as usize, UNMAPPED + 8, "DFAR");
    Ok(())
}

fn unmapped_exec_faults() -> CaseResult {
    // SAFETY: the address is unmapped, so nothing runs there.
    let r = unsafe { fault::call(UNMAPPED + 0x100) };
    let f = match r {
        Ok(()) => {
            println!("    call into unmapped address returned");
            return Err(());
        }
        Err(f) => f,
    };
    ensure_eq!(f.kind, AbortKind::Prefetch, "abort kind");
    ensure_eq!(f.class(), FaultClass::Translation, "IFSR {:#x}", f.status);
    ensure_eq!(f.address as usize, UNMAPPED + 0x100, "IFAR");
    Ok(())
}

fn frame_allocator_counts() -> CaseResult {
    let before = rt::frames::stats();
    let a = rt::frames::alloc(4, 16384);
    let b = rt::frames::alloc(1, 4096);
    let (Some(a), Some(b)) = (a, b) else {
        println!("    allocation failed");
        return Err(());
    };
    ensure!(
        a.is_aligned(16384),
        "L1-sized allocation not 16 KiB aligned: {}",
        a
    );
    ensure!(a != b, "same frame handed out twice");
    ensure_eq!(
        rt::frames::stats().outstanding,
        before.outstanding + 5,
        "frames out"
    );
    rt::frames::fail_nth(Some(1));
    ensure!(
        rt::frames::alloc(1, 4096).is_none(),
        "fail_nth(1) did not fail the next request"
    );
    rt::frames::free(a, 4);
    rt::frames::free(b, 1);
    ensure_eq!(
        rt::frames::stats().outstanding,
        before.outstanding,
        "frames back"
    );
    Ok(())
}

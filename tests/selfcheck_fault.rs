//! qemu: cpu=cortex-a15 smp=1 mem=128
//! expect: fail "unexpected data abort"
//!
//! Harness self-check: a fault no probe expected must fail the boot with the fault status
//! printed (the xtask runs it as an expected failure and checks the message).

#![no_std]
#![no_main]

use rt::{Case, CaseResult};

rt::entry!(main);

fn main() -> ! {
    rt::mmu::enable_identity(rt::ram_size());
    rt::cases::run(&[Case {
        name: "unexpected_fault",
        run: touch_unmapped,
    }])
}

fn touch_unmapped() -> CaseResult {
    // SAFETY: deliberately reads an unmapped address without a probe; the runtime's abort
    // handler must fail the boot.
    let v = unsafe { core::ptr::read_volatile(0x2000_0000 as *const u32) };
    rt::println!("read {:#x} from an unmapped address", v);
    Ok(())
}

//! qemu: cpu=cortex-a15 smp=1 mem=128
//! expect: timeout
//! timeout: 3
//!
//! Harness self-check: a kernel that never exits must be reported as a timeout, not hang
//! the run (the xtask runs it as an expected timeout).

#![no_std]
#![no_main]

rt::entry!(main);

fn main() -> ! {
    rt::println!("selfcheck_hang: spinning forever");
    loop {
        core::hint::spin_loop();
    }
}

//! qemu: cpu=cortex-a15 smp=1 mem=128
//! expect: fail "case deliberately_fails ... FAILED"
//!
//! Harness self-check: a kernel with one passing and one failing case must be reported as a
//! failed boot (the xtask runs it as an expected failure). If the harness ever reported it
//! as passing, every other result would be worthless.

#![no_std]
#![no_main]

use rt::{ensure_eq, Case, CaseResult};

rt::entry!(main);

fn main() -> ! {
    rt::cases::run(&[
        Case {
            name: "passes",
            run: passes,
        },
        Case {
            name: "deliberately_fails",
            run: fails,
        },
    ])
}

fn passes() -> CaseResult {
    ensure_eq!(1 + 1, 2, "arithmetic");
    Ok(())
}

fn fails() -> CaseResult {
    let two = core::hint::black_box(2);
    ensure_eq!(two, 3, "this case must fail");
    Ok(())
}

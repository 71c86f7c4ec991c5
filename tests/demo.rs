//! qemu: cpu=cortex-a15 smp=1 mem=128
//!
//! The demo behind `cargo xtask run`: turn the MMU on, create a mapping, use it, remove it,
//! and show that the old address now faults.

#![no_std]
#![no_main]

use rt::println;

rt::entry!(main);

const DEMO_VA: u32 = 0x2000_0000;

fn main() -> ! {
    println!("armv7-mm demo on cpu {}", rt::cpu_id());
    let l1 = rt::mmu::enable_identity(rt::ram_size());
    println!(
        "  MMU on: identity map of RAM + UART, L1 table at {:#010x}",
        l1
    );

    let frame = rt::frames::alloc(256, 1 << 20).expect("1 MiB of RAM");
    println!("  map   {:#010x} -> {} (1 MiB section)", DEMO_VA, frame);
    rt::mmu::map_section(DEMO_VA, frame.as_u64() as u32);
    // SAFETY: DEMO_VA now maps the section we just allocated.
    unsafe { rt::fault::write32(DEMO_VA as usize, 0xfeed_f00d) }.expect("write through mapping");
    let v = rt::fault::read32(DEMO_VA as usize).expect("read through mapping");
    println!("  wrote and read {:#x} through the new mapping", v);

    rt::mmu::unmap_section(DEMO_VA);
    match rt::fault::read32(DEMO_VA as usize) {
        Ok(v) => {
            println!("  ERROR: read {:#x} after unmap", v);
            rt::semihosting::exit(1)
        }
        Err(f) => println!(
            "  unmapped; a read now faults: {:?} fault at {:#010x}",
            f.class(),
            f.address
        ),
    }
    rt::frames::free(frame, 256);
    println!("demo done");
    rt::semihosting::exit(0)
}

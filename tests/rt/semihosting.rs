//! ARM semihosting through `svc 0x123456` (A32): exit with a status, read the command line.
//!
//! QEMU must run with `-semihosting-config enable=on,target=native`. The `bkpt 0xab` form
//! (used by `qemu-exit`) is honoured by QEMU only on M-profile CPUs.

const SYS_EXIT_EXTENDED: u32 = 0x20;
const SYS_GET_CMDLINE: u32 = 0x15;
const ADP_STOPPED_APPLICATION_EXIT: u32 = 0x20026;

fn call(op: u32, arg: *const u32) -> u32 {
    let ret: u32;
    // SAFETY: QEMU handles `svc 0x123456` as a semihosting call before any exception is
    // taken; the parameter block `arg` points to is valid for the call's duration.
    unsafe {
        core::arch::asm!(
            "svc 0x123456",
            inout("r0") op => ret,
            in("r1") arg,
            out("lr") _,
            options(nostack)
        );
    }
    ret
}

/// Ends the QEMU run with `code` as the process exit status.
pub fn exit(code: u32) -> ! {
    let block = [ADP_STOPPED_APPLICATION_EXIT, code];
    call(SYS_EXIT_EXTENDED, block.as_ptr());
    loop {
        core::hint::spin_loop();
    }
}

/// Copies the semihosting command line (`-semihosting-config arg=...`) into `buf` and returns
/// the part that was filled.
pub fn cmdline(buf: &mut [u8]) -> &str {
    let mut block = [buf.as_mut_ptr() as u32, buf.len() as u32];
    if call(SYS_GET_CMDLINE, block.as_mut_ptr()) != 0 {
        return "";
    }
    let len = (block[1] as usize).min(buf.len());
    core::str::from_utf8(&buf[..len]).unwrap_or("")
}
